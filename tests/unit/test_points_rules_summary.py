"""The summary sentences of ExplainMemberRules (services/points/domain/program.py) for
rules and standings the default rules file does not show."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from services.points.domain import tiers
from services.points.domain.program import MemberFacts, summarise
from services.points.domain.tiers import TierState
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE

RULES = load_rules_file(DEFAULT_RULES_FILE)
NOW = datetime(2026, 11, 20, 8, tzinfo=UTC)
ACTIVE = MemberFacts("ACTIVE", None, (), None, 0, 0)


def sentences(facts: MemberFacts = ACTIVE, **rules: object) -> list[str]:
    changed = replace(RULES, **rules)  # type: ignore[arg-type]
    got = tiers.progress(changed, facts.tier, facts.qualifying, NOW)
    return list(summarise(changed, 3, NOW, facts, got))


def test_no_caps_no_pending_days_no_grace_and_negative_refunds() -> None:
    said = " ".join(
        sentences(
            cap_per_payment=None,
            cap_per_member_day=None,
            pending_days=0,
            downgrade_grace_days=0,
            refund_policy="allow_negative",
            negative_floor=500,
        )
    )
    assert "The program rules of version 3 apply (in force since 2026-11-20 UTC)." in said
    assert "Caps, applied after rounding: none per payment, none per day" in said
    assert "A payment's points can be spent at once;" in said
    assert "with too few qualifying points it drops to the tier the points reach" in said
    assert "taken below zero, at most 500 points below" in said


def test_the_top_tier_in_grace_and_a_debt() -> None:
    state = TierState("diamond", NOW, NOW, NOW, 1)
    said = sentences(MemberFacts("ACTIVE", None, (), state, 20, -7))
    assert "It is the top tier." in said
    assert "A review found too few qualifying points: the tier is in its grace period." in said
    assert "The member owes 7 points from earlier refunds." in said


def test_a_closed_and_paused_member() -> None:
    said = sentences(MemberFacts("CLOSED", None, ("CONSENT_WITHDRAWN",), None, 0, 0))
    assert said[0].startswith("The member's account is closed: new payments earn no points")
    assert said[1].startswith(
        "Settling the member's new payments is paused (consent to processing payment records"
    )
