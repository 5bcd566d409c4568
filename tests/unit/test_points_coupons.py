"""Coupon and checkout rules without a database: template checks, what a coupon takes off,
its state as of now, and the quote's best combination."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.points.domain import checkout
from services.points.domain.coupons import (
    Coupon,
    CouponState,
    DiscountKind,
    Purchase,
    TemplateSpec,
    applies,
    check_template,
    discount,
    new_code,
    refusal_to_reserve,
    template_document,
    template_of,
    validity,
)
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE
from services.runtime.errors import DomainError

NOW = datetime(2026, 12, 8, 4, 0, tzinfo=UTC)
RULES = load_rules_file(DEFAULT_RULES_FILE)
SILVER = RULES.tier("silver")  # 1 % off
TEN_OFF = TemplateSpec(
    "¥10 off",
    DiscountKind.AMOUNT_OFF,
    "CNY",
    amount_off_minor=1000,
    min_spend_minor=5000,
    valid_days=30,
)
FIVE_PERCENT = TemplateSpec(
    "5 % off",
    DiscountKind.PERCENT_OFF,
    "CNY",
    percent_off_bps=500,
    max_off_minor=1500,
    valid_days=30,
    stacks_with_tier_discount=True,
)


def coupon(code: str = "A", days: int = 30, state: CouponState = CouponState.ISSUED) -> Coupon:
    return Coupon("m1", 1, code, "t", state, NOW, NOW, NOW + timedelta(days=days))


def purchase(amount: int = 20_000, **changes: object) -> Purchase:
    return replace(Purchase("CNY", amount, "shop", "retail", "silver"), **changes)  # type: ignore[arg-type]


def test_a_template_round_trips_and_every_fault_is_named() -> None:
    check_template(TEN_OFF, RULES, NOW)
    assert template_of(template_document(FIVE_PERCENT)) == FIVE_PERCENT
    fixed = replace(TEN_OFF, valid_days=None, valid_from=NOW, valid_until=NOW + timedelta(days=1))
    assert template_of(template_document(fixed)) == fixed
    bad = replace(
        FIVE_PERCENT,
        name="",
        percent_off_bps=10_001,
        currency="EUR",
        min_spend_minor=-1,
        categories=("fee", "nope"),
        tiers=("platinum",),
        valid_days=None,
        stock=0,
        per_member_limit=0,
    )
    with pytest.raises(DomainError) as caught:
        check_template(bad, RULES, NOW)
    assert {v.field for v in caught.value.violations} >= {
        "template.display_name",
        "template.percent_off_bps",
        "template.currency_code",
        "template.min_spend.amount_minor",
        "template.merchant_categories[0]",
        "template.merchant_categories[1]",
        "template.tiers[0]",
        "template.validity",
        "template.stock",
        "template.per_member_limit",
    }
    past = replace(
        TEN_OFF,
        valid_days=None,
        valid_from=NOW - timedelta(days=2),
        valid_until=NOW - timedelta(days=1),
    )
    with pytest.raises(DomainError, match="valid_until"):
        check_template(past, RULES, NOW)


@given(amount=st.integers(1, 10**9), bps=st.integers(1, 10_000))
def test_a_discount_never_exceeds_the_amount_and_percentages_round_down(
    amount: int, bps: int
) -> None:
    percent = replace(FIVE_PERCENT, percent_off_bps=bps, max_off_minor=None)
    assert discount(percent, amount) == amount * bps // 10_000
    assert 0 <= discount(TEN_OFF, amount) <= amount
    assert discount(FIVE_PERCENT, amount) <= 1500


def test_where_a_coupon_applies() -> None:
    assert applies(TEN_OFF, purchase()) == ""
    assert "at least 5000" in applies(TEN_OFF, purchase(4999))
    assert "CNY" in applies(TEN_OFF, purchase(currency="HKD"))
    assert applies(replace(TEN_OFF, categories=("dining",)), purchase()) != ""
    assert applies(replace(TEN_OFF, merchant_ids=("other",)), purchase()) != ""
    assert applies(replace(TEN_OFF, tiers=("gold",)), purchase()) != ""


def test_validity_and_the_state_as_of_now() -> None:
    assert validity(TEN_OFF, NOW) == (NOW, NOW + timedelta(days=30))
    lapsed = replace(
        coupon(),
        state=CouponState.RESERVED,
        reserved_payment_id="p",
        reserved_until=NOW + timedelta(minutes=15),
    )
    assert lapsed.shown_state(NOW) is CouponState.RESERVED
    assert lapsed.shown_state(NOW + timedelta(minutes=15)) is CouponState.ISSUED
    assert coupon(days=1).shown_state(NOW + timedelta(days=1)) is CouponState.EXPIRED
    assert refusal_to_reserve(coupon(), NOW) is None
    used = refusal_to_reserve(coupon(state=CouponState.REDEEMED), NOW)
    assert used is not None and used.reason == "COUPON_USED"
    early = replace(coupon(), valid_from=NOW + timedelta(days=1))
    not_yet = refusal_to_reserve(early, NOW)
    assert not_yet is not None and not_yet.reason == "COUPON_NOT_USABLE"


def test_codes_are_128_random_bits() -> None:
    codes = {new_code() for _ in range(1000)}
    assert len(codes) == 1000 and all(len(c) == 26 and c.isalnum() for c in codes)


def test_the_best_combination_and_its_ties() -> None:
    # tier alone: 200; ¥10 alone (does not stack): 1,000; 5 % of 19,800 beside the tier: 1,190
    quoted = checkout.quote(
        purchase(), SILVER, [(coupon("A"), TEN_OFF), (coupon("B"), FIVE_PERCENT)], NOW
    )
    assert quoted.best is not None and quoted.best.coupon.code == "B"
    assert (quoted.total_discount_minor, quoted.charge_minor, quoted.tier_applied) == (
        1190,
        18_810,
        True,
    )
    # no usable coupon: the tier discount alone
    alone = checkout.quote(purchase(4000), SILVER, [(coupon("A"), TEN_OFF)], NOW)
    assert (alone.best, alone.total_discount_minor) == (None, 40)
    assert alone.options[0].reason != ""
    # a tie goes to the coupon that expires soonest
    tie = checkout.quote(
        purchase(), SILVER, [(coupon("late", 20), TEN_OFF), (coupon("soon", 5), TEN_OFF)], NOW
    )
    assert tie.best is not None and tie.best.coupon.code == "soon"
    # a coupon that takes less than the tier discount it would replace is not chosen
    small = replace(TEN_OFF, amount_off_minor=100)
    kept = checkout.quote(purchase(), SILVER, [(coupon("A"), small)], NOW)
    assert (kept.best, kept.total_discount_minor) == (None, 200)
