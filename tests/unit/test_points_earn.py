"""Earning, clawback and lot dates: exact arithmetic, one rounding, caps and the rules' zone."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.points.domain import earning as earn
from services.points.domain.clawback import clawback_increment, clawback_points
from services.points.domain.earning import (
    BELOW_ONE_POINT,
    DAILY_CAP_REACHED,
    NON_EARNING_CATEGORY,
    ZERO_MULTIPLIER,
    Earning,
    UnknownCurrency,
    available_at,
    compute_earning,
    expires_at,
    explain,
    local_day,
    local_day_bounds,
)
from services.points.domain.rules import Rules
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE

RULES = load_rules_file(DEFAULT_RULES_FILE)
UNCAPPED = dataclasses.replace(RULES, cap_per_payment=None, cap_per_member_day=None)
BASIC, SILVER, GOLD, DIAMOND = 10000, 12500, 15000, 20000
SHANGHAI = RULES.zone


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def earning(
    amount_minor: int,
    category: str = "books",
    tier: int = BASIC,
    *,
    currency: str = "CNY",
    earned_today: int = 0,
    rules: Rules = RULES,
) -> Earning:
    return compute_earning(rules, currency, amount_minor, category, tier, earned_today)


# ---- examples -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "category", "tier", "points"),
    [
        (1234, "CNY", "dining", SILVER, 30),  # floor(12.34 × 2 × 1.25) = floor(30.85)
        (1234, "CNY", "books", BASIC, 12),  # not a bonus category: ×1
        (1234, "CNY", "supermarket", GOLD, 27),  # floor(12.34 × 1.5 × 1.5) = floor(27.765)
        (1234, "CNY", "travel", DIAMOND, 74),  # floor(12.34 × 3 × 2) = floor(74.04)
        (1000, "USD", "books", BASIC, 72),  # 10.00 USD at 7.2 points per USD
        (1000, "HKD", "dining", BASIC, 18),  # 10.00 HKD × 0.9 × 2
        (100, "CNY", "books", BASIC, 1),
    ],
)
def test_examples(amount: int, currency: str, category: str, tier: int, points: int) -> None:
    result = earning(amount, category, tier, currency=currency)
    assert (result.points, result.none_reason) == (points, "")


def test_steps_record_every_stage_exactly() -> None:
    result = earning(1234, "dining", SILVER)
    assert [(s.name, s.value) for s in result.steps] == [
        ("base", "617/50"),  # 12.34 points
        ("category", "617/25"),  # 24.68
        ("tier", "617/20"),  # 30.85
        ("round_down", "30"),
        ("cap_per_payment", "30"),
        ("cap_per_member_day", "30"),
    ]
    assert result.document()[0] == {
        "name": "base",
        "value": "617/50",
        "note": "12.34 CNY at 1 point per 1 CNY is 12.34",
    }


def test_rounds_down_only_once_at_the_end() -> None:
    # 1.60 CNY × 1.5 × 1.25 = 3 exactly; rounding after each step would give 1 × 1 × 1 = 1
    assert earning(160, "supermarket", SILVER).points == 3
    # 0.99 × 2 × 1.25 = 2.475 → 2 (rounding the base first would give 0)
    assert earning(99, "dining", SILVER).points == 2


def test_cap_per_payment() -> None:
    result = earning(1_000_000, "travel", DIAMOND)  # 60000 before the cap
    assert result.points == 5000
    assert result.steps[-2].note == "capped at 5000 per payment"


def test_daily_cap_partially_used() -> None:
    result = earning(1234, "dining", SILVER, earned_today=19_990)
    assert (result.points, result.none_reason) == (10, "")
    assert "limited to the 10 left of the daily cap of 20000" in explain(result)


def test_both_caps_apply_in_order() -> None:
    assert earning(1_000_000, "travel", DIAMOND, earned_today=17_000).points == 3000
    assert earning(1_000_000, "travel", DIAMOND, earned_today=10_000).points == 5000


@pytest.mark.parametrize("earned_today", [20_000, 25_000])  # above: the cap was lowered today
def test_daily_cap_reached(earned_today: int) -> None:
    result = earning(1234, "dining", SILVER, earned_today=earned_today)
    assert (result.points, result.none_reason) == (0, DAILY_CAP_REACHED)


@pytest.mark.parametrize("category", ["top_up", "p2p_transfer", "fee"])
def test_non_earning_categories(category: str) -> None:
    result = earning(1_000_000, category, DIAMOND)
    assert (result.points, result.none_reason) == (0, NON_EARNING_CATEGORY)
    assert [s.name for s in result.steps] == ["base", "category"]


@pytest.mark.parametrize(("amount", "currency"), [(99, "CNY"), (1, "CNY"), (111, "HKD")])
def test_below_one_point(amount: int, currency: str) -> None:
    result = earning(amount, currency=currency)
    assert (result.points, result.none_reason) == (0, BELOW_ONE_POINT)


def test_zero_multiplier() -> None:
    result = earning(100_000, "books", 0)
    assert (result.points, result.none_reason) == (0, ZERO_MULTIPLIER)


def test_unknown_currency() -> None:
    with pytest.raises(UnknownCurrency) as caught:
        earning(100, currency="EUR")
    assert isinstance(caught.value, ValueError)
    assert caught.value.code == "EUR"
    assert earn.UnknownCurrency is UnknownCurrency


@pytest.mark.parametrize(
    ("amount", "tier", "today"),
    [(0, BASIC, 0), (-100, BASIC, 0), (2**63, BASIC, 0), (1, -1, 0), (1, 100_001, 0), (1, 1, -1)],
)
def test_bad_inputs(amount: int, tier: int, today: int) -> None:
    with pytest.raises(ValueError, match=r"^(amount_minor|tier_multiplier_bps|earned_today)"):
        earning(amount, tier=tier, earned_today=today)


def test_without_caps() -> None:
    result = earning(1_000_000, "travel", DIAMOND, rules=UNCAPPED)
    assert result.points == 60_000
    assert "no cap per payment" in explain(result) and "no daily cap" in explain(result)


def test_points_beyond_int64_are_refused() -> None:
    with pytest.raises(ValueError, match="int64"):
        earning(2**63 - 1, "travel", 100_000, rules=UNCAPPED, currency="USD")


def test_explain_is_one_sentence() -> None:
    text = explain(earning(1234, "dining", SILVER))
    assert text == (
        "Earned 30 points: 12.34 CNY at 1 point per 1 CNY is 12.34, ×2 for dining is 24.68, "
        "×1.25 for the tier is 30.85, rounded down to 30, within the cap of 5000 per payment, "
        "within the daily cap of 20000 (20000 left today)."
    )
    assert explain(earning(100, "top_up")).startswith("Earned no points (non earning category): ")
    assert explain(earning(100)).startswith("Earned 1 point: ")


@pytest.mark.parametrize(
    ("value", "text"),
    [(Fraction(1234, 100), "12.34"), (Fraction(5), "5"), (Fraction(1, 8), "0.125")],
)
def test_show_exact_decimals(value: Fraction, text: str) -> None:
    assert earn.show(value) == text


def test_show_repeating_decimals() -> None:
    assert earn.show(Fraction(37, 3)) == "37/3 (about 12.3333)"


# ---- clawback -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "payment", "refund", "clawed"),
    [
        (30, 1234, 1234, 30),
        (30, 1234, 617, 15),
        (30, 1234, 1, 1),  # 0.024 of a point rounds up to 1
        (30, 1234, 0, 0),
        (0, 1234, 1234, 0),
        (10, 3, 1, 4),  # 3.33 → 4
        (10, 3, 2, 7),  # 6.67 → 7
    ],
)
def test_clawback_rounds_up(points: int, payment: int, refund: int, clawed: int) -> None:
    assert clawback_points(points, payment, refund) == clawed


@pytest.mark.parametrize(("points", "payment", "refund"), [(1, 0, 0), (-1, 10, 1), (1, 10, 11)])
def test_clawback_bad_inputs(points: int, payment: int, refund: int) -> None:
    with pytest.raises(ValueError):
        clawback_points(points, payment, refund)


def test_repeated_partial_refunds_never_take_more_than_earned() -> None:
    assert [clawback_increment(1, 3, before, 1) for before in (0, 1, 2)] == [1, 0, 0]
    assert [clawback_increment(10, 3, before, 1) for before in (0, 1, 2)] == [4, 3, 3]


# ---- dates --------------------------------------------------------------------------------


def test_available_after_the_pending_days() -> None:
    occurred = datetime(2026, 3, 1, 12, 0, tzinfo=SHANGHAI)
    assert available_at(RULES, occurred) == utc(2026, 3, 8, 4, 0)
    assert available_at(RULES, occurred).tzinfo is UTC


@pytest.mark.parametrize(
    ("earned", "expires"),
    [
        (utc(2026, 1, 15, 4), utc(2027, 1, 31, 16)),  # end of January 2027, Shanghai
        (utc(2026, 1, 31, 15, 59, 59), utc(2027, 1, 31, 16)),  # still 31 Jan in Shanghai
        (utc(2026, 1, 31, 20), utc(2027, 2, 28, 16)),  # already 1 Feb in Shanghai
        (utc(2026, 12, 31, 15, 59), utc(2027, 12, 31, 16)),  # 23:59 on 31 Dec local
        (utc(2026, 12, 31, 16), utc(2028, 1, 31, 16)),  # 1 Jan 2027 local
        (utc(2027, 2, 10), utc(2028, 2, 29, 16)),  # a leap February
    ],
)
def test_expiry_at_month_end_in_the_rules_zone(earned: datetime, expires: datetime) -> None:
    assert expires_at(RULES, earned) == expires


@pytest.mark.parametrize(
    ("months", "expires"), [(1, utc(2027, 1, 31, 16)), (13, utc(2028, 1, 31, 16))]
)
def test_expiry_across_year_ends(months: int, expires: datetime) -> None:
    rules = dataclasses.replace(RULES, expiry_months=months)
    assert expires_at(rules, utc(2026, 12, 5)) == expires


def test_expiry_in_a_zone_with_daylight_saving() -> None:
    rules = dataclasses.replace(RULES, timezone="America/New_York", expiry_months=1)
    assert expires_at(rules, utc(2026, 2, 10)) == utc(2026, 4, 1, 4)  # EDT: UTC-4
    assert expires_at(rules, utc(2026, 10, 10)) == utc(2026, 12, 1, 5)  # EST: UTC-5


def test_local_day_for_the_daily_cap() -> None:
    assert local_day(RULES, utc(2026, 1, 31, 20)) == date(2026, 2, 1)
    assert local_day(RULES, utc(2026, 1, 31, 15, 59)) == date(2026, 1, 31)
    assert local_day_bounds(RULES, date(2026, 2, 1)) == (utc(2026, 1, 31, 16), utc(2026, 2, 1, 16))


@pytest.mark.parametrize(
    "call",
    [
        lambda d: available_at(RULES, d),
        lambda d: expires_at(RULES, d),
        lambda d: local_day(RULES, d),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[datetime], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2026, 1, 1))  # naive: the point of the test


# ---- properties ---------------------------------------------------------------------------

CURRENCIES = st.sampled_from(sorted(RULES.currencies))
CATEGORIES = st.sampled_from(["dining", "supermarket", "travel", "books", "top_up", "fee"])
TIER_BPS = st.one_of(st.sampled_from([BASIC, SILVER, GOLD, DIAMOND]), st.integers(0, 100_000))
AMOUNTS = st.integers(1, 10**12)
TODAY = st.integers(0, 30_000)
RULE_SETS = st.sampled_from([RULES, UNCAPPED])


def reference(
    rules: Rules, currency: str, amount: int, category: str, tier: int, today: int
) -> int:
    """An independent computation: one integer floor division, then the caps."""
    if category in rules.non_earning_categories:
        return 0
    rate = rules.currencies[currency].points_per_unit
    bonus = rules.category_multipliers_bps.get(category, 10_000)
    numerator = amount * rate.numerator * bonus * tier
    scale: int = 10 ** rules.currencies[currency].minor_units  # int ** int is Any to mypy
    denominator = scale * rate.denominator * 10**8
    points = numerator // denominator
    if rules.cap_per_payment is not None:
        points = min(points, rules.cap_per_payment)
    if rules.cap_per_member_day is not None:
        points = min(points, max(0, rules.cap_per_member_day - today))
    return points


@settings(max_examples=300, deadline=None)
@given(RULE_SETS, CURRENCIES, AMOUNTS, CATEGORIES, TIER_BPS, TODAY)
def test_earning_matches_an_independent_reference(
    rules: Rules, currency: str, amount: int, category: str, tier: int, today: int
) -> None:
    result = compute_earning(rules, currency, amount, category, tier, today)
    assert result.points == reference(rules, currency, amount, category, tier, today)
    assert (result.points > 0) == (result.none_reason == "")


@settings(max_examples=300, deadline=None)
@given(RULE_SETS, CURRENCIES, AMOUNTS, AMOUNTS, CATEGORIES, TIER_BPS, TODAY)
def test_earning_is_monotone_and_bounded(
    rules: Rules, currency: str, a: int, b: int, category: str, tier: int, today: int
) -> None:
    low, high = sorted((a, b))
    smaller = compute_earning(rules, currency, low, category, tier, today).points
    larger = compute_earning(rules, currency, high, category, tier, today).points
    assert 0 <= smaller <= larger
    if rules.cap_per_payment is not None:
        assert larger <= rules.cap_per_payment
    if rules.cap_per_member_day is not None:
        assert larger <= max(0, rules.cap_per_member_day - today)


@st.composite
def refunds(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """Points, a payment, and partial refunds adding up to at most the payment."""
    payment = draw(st.integers(1, 10**9))
    cuts = sorted(draw(st.lists(st.integers(0, payment), max_size=6)))
    parts = [b - a for a, b in zip([0, *cuts], cuts, strict=False)]
    return draw(st.integers(0, 10**6)), payment, parts


@settings(max_examples=300, deadline=None)
@given(refunds())
def test_clawback_properties(case: tuple[int, int, list[int]]) -> None:
    points, payment, parts = case
    assert clawback_points(points, payment, payment) == points
    total = sum(parts)
    share = Fraction(points * total, payment)
    separately = sum(clawback_points(points, payment, part) for part in parts)
    assert separately >= share
    assert clawback_points(points, payment, total) == math.ceil(share) <= points
    increments, before = [], 0
    for part in parts:
        increments.append(clawback_increment(points, payment, before, part))
        before += part
    assert all(i >= 0 for i in increments)
    assert sum(increments) == math.ceil(share)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.integers(1, 120),
)
def test_expiry_is_a_local_month_start_after_the_earning(earned: datetime, months: int) -> None:
    rules = dataclasses.replace(RULES, expiry_months=months)
    expires = expires_at(rules, earned)
    local_earned, local_expires = earned.astimezone(SHANGHAI), expires.astimezone(SHANGHAI)
    assert (local_expires.day, local_expires.hour, local_expires.minute) == (1, 0, 0)
    month_gap = (
        (local_expires.year - local_earned.year) * 12 + local_expires.month - local_earned.month
    )
    assert month_gap == months + 1
    assert expires - earned > timedelta(days=28 * months)
    assert (
        local_day(rules, expires - timedelta(microseconds=1)).month
        == (local_expires.month - 2) % 12 + 1
    )
