"""What a settlement stores, without a database: its explanation written as JSON text (the
same document the dict and `json.dumps` made), its request fingerprint (unambiguous, and the
hash stored before 2026-12-07 still recognised), and its result rebuilt from columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.points.domain import earning as earn
from services.points.domain.campaign_awards import CampaignAward, CampaignOutcome, with_campaigns
from services.points.domain.rules import RulesInForce
from services.points.domain.settlement import (
    Payment,
    PointsState,
    SettlementResult,
    StoredPrior,
)
from services.points.domain.settlement_explanation import explanation_json
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE

RULES = RulesInForce(1, load_rules_file(DEFAULT_RULES_FILE))
WHEN = datetime(2026, 12, 7, 8, 30, 15, 123456, tzinfo=UTC)
# categories with quotes, backslashes, control and non-ASCII characters: each must be
# encoded, not pasted into the JSON text
TEXT = st.text(min_size=1, max_size=20)
CATEGORY = st.one_of(st.sampled_from(["dining", "travel", "supermarket", "top_up"]), TEXT)


def document_as_before(payment: Payment, earning: earn.Earning, repaid: int) -> dict[str, Any]:
    """The explanation as settlements built it before 2026-12-07 (a dict, then json.dumps),
    with the merchant and channel added by issue 15."""
    return {
        "kind": "settlement",
        "payment": {
            "currency": payment.currency,
            "amount_minor": payment.amount_minor,
            "merchant_category": payment.category,
            # since issue 15: what a campaign's audience reads, for SimulateCampaign
            "merchant_id": payment.merchant_id,
            "channel": payment.channel,
            "occurred_at": payment.occurred_at.isoformat(),
        },
        "steps": [{"name": s.name, "value": s.value, "note": s.note} for s in earning.steps],
        "points": earning.points,
        "none_reason": earning.none_reason,
        "sentence": earn.explain(earning),
        "debt_repaid": repaid,
    }


def a_payment(amount_minor: int = 1234, category: str = "dining", **changes: Any) -> Payment:
    fields: dict[str, Any] = {
        "member_id": "m-1",
        "payment_id": "p-1",
        "currency": "CNY",
        "amount_minor": amount_minor,
        "merchant_id": "merchant-1",
        "category": category,
        "occurred_at": WHEN,
        "channel": "app",
    }
    return Payment(**{**fields, **changes})


@settings(max_examples=300, deadline=None)
@given(
    amount=st.integers(1, 10**15),
    category=CATEGORY,
    currency=st.sampled_from(["CNY", "HKD", "USD"]),
    tier_bps=st.sampled_from([0, 10_000, 12_500, 15_000, 33_333]),
    earned_today=st.integers(0, 30_000),
    repaid=st.integers(0, 1000),
    offset_s=st.integers(-(10**8), 10**8),
)
def test_the_explanation_text_is_the_document_settlements_wrote(
    amount: int,
    category: str,
    currency: str,
    tier_bps: int,
    earned_today: int,
    repaid: int,
    offset_s: int,
) -> None:
    payment = a_payment(
        amount, category, currency=currency, occurred_at=WHEN + timedelta(seconds=offset_s)
    )
    earning = earn.compute_earning(RULES.rules, currency, amount, category, tier_bps, earned_today)
    text = explanation_json(payment, earning, earn.explain(earning), repaid)
    assert json.loads(text) == document_as_before(payment, earning, repaid)


def test_a_repeat_is_recognised_by_the_hash_stored_before_and_after_the_change() -> None:
    payment = a_payment()
    assert payment.matches(payment.fingerprint())
    assert payment.matches(payment.legacy_fingerprint())
    assert payment.fingerprint() != payment.legacy_fingerprint()
    assert not a_payment(amount_minor=1235).matches(payment.fingerprint())
    assert not a_payment(amount_minor=1235).matches(payment.legacy_fingerprint())


def test_no_two_payments_share_a_fingerprint_by_moving_text_between_fields() -> None:
    # fields joined without their lengths would make these two the same text
    one = a_payment(merchant_id="shop;1", category="dining")
    other = a_payment(merchant_id="shop", category="1;dining")
    assert one.fingerprint() != other.fingerprint()


def test_a_result_is_rebuilt_from_its_columns_or_from_the_stored_document() -> None:
    available, expires = WHEN + timedelta(days=7), datetime(2028, 1, 1, tzinfo=UTC)
    expected = SettlementResult(
        member_id="m-1",
        payment_id="p-1",
        points=12,
        state=PointsState.PENDING,
        available_at=available,
        expires_at=expires,
        tier_multiplier_bps=12_500,
        rule_version=3,
        txn_id=41,
    )
    lean = StoredPrior(b"h", None, 41, 12, 3, ("PENDING", 12_500, available, expires))
    assert lean.settlement("m-1", "payment:p-1").result == expected
    legacy = StoredPrior(b"h", json.dumps(expected.to_json()), 41, 12, 3, None)
    assert legacy.settlement("m-1", "payment:p-1").result == expected


def test_a_row_with_neither_a_result_nor_its_columns_is_an_error_not_a_guess() -> None:
    broken = StoredPrior(b"h", None, 41, 12, 3, None)
    with pytest.raises(ValueError, match="transaction 41 stores no JSON result"):
        broken.settlement("m-1", "payment:p-1")


def test_campaign_steps_name_their_campaign_version_in_the_document() -> None:
    payment = a_payment(1234, "dining")
    program = earn.compute_earning(RULES.rules, "CNY", 1234, "dining", 10_000, 0)
    awards = CampaignOutcome(
        (
            CampaignAward("double-8th", 2, 'Member "day"', 24, False, "campaign 'x' adds "),
            CampaignAward("welcome", 1, "Welcome", 50, True, "campaign 'y' adds "),
        )
    )
    earning = with_campaigns(program, awards)
    doc = json.loads(explanation_json(payment, earning, earn.explain(earning), 0, awards))
    campaign_steps = [s for s in doc["steps"] if s["name"] == "campaign"]
    assert [
        (s["campaign_id"], s["version"], s["value"], s["tier_qualifying"]) for s in campaign_steps
    ] == [("double-8th", 2, "24", False), ("welcome", 1, "50", True)]
    assert doc["steps"][-1] == {
        "name": "total",
        "value": str(24 + 50 + program.points),
        "note": earning.steps[-1].note,
    }
    assert doc["points"] == program.points + 74 and doc["points_not_qualifying"] == 24
