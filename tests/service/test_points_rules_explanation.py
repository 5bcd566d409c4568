"""ExplainMemberRules (internal, for the privacy service; PIPL Art. 48): the rules that apply
to one member now, from the program rules loaded, with the member's tier and progress as
GetTierProgress gives them, and the restriction and processing pauses that change them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points.domain.rules import fraction_text
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE
from services.runtime.access import METHOD_SCOPES, ROLE_SCOPES
from tests.service.test_points_privacy import restrict_request, restricted
from tests.service.test_points_processing import CONSENT, RESTRICTION, apply, event
from tests.service.test_points_refunds import OLD, refund, refunded, settle, spend
from tests.service.test_points_settlement import known_member, payment
from tests.service.test_points_tiers import progress, silver
from tests.support.points import points_with_rules, rules_file
from tests.support.rpc_errors import expect_error, rpc_error
from tests.support.suite import Suite

RULES = load_rules_file(DEFAULT_RULES_FILE)
METHOD = "/membership.points.v1.PointsService/ExplainMemberRules"
Stub = pb_grpc.PointsServiceStub


async def explained(
    suite: Suite, member_id: str, stub: Stub | None = None
) -> pb.MemberRulesExplanation:
    got: pb.MemberRulesExplanation = await (stub or suite.points).ExplainMemberRules(
        pb.ExplainMemberRulesRequest(member=f"members/{member_id}"),
        metadata=suite.auth("service:privacy"),
    )
    return got


@pytest.fixture
async def lenient(suite: Suite, tmp_path: Path) -> AsyncIterator[Stub]:
    """A second points service on the database: allow_negative to -1000, no daily cap."""
    text = rules_file(tmp_path, refund_policy='"allow_negative"', negative_floor="1000")
    text.write_text(
        text.read_text(encoding="utf-8").replace("cap_per_member_day = 20000", ""),
        encoding="utf-8",
    )
    async with points_with_rules(suite, text) as stub:
        yield stub


async def test_the_values_are_the_program_rules_loaded(
    suite: Suite, db: asyncpg.Connection
) -> None:
    got = await explained(suite, await known_member(suite))
    version = await db.fetchrow(
        "SELECT version, loaded_at FROM points.program_rules WHERE digest = $1", RULES.digest()
    )
    assert version is not None
    assert got.rule_version == version["version"]
    assert got.rule_effective_time.ToDatetime().timestamp() == pytest.approx(
        version["loaded_at"].timestamp(), abs=1e-6
    )
    assert got.time_zone == RULES.timezone == "Asia/Shanghai"
    earning = got.earning
    assert [(c.currency_code, c.minor_units, c.points_per_unit) for c in earning.currencies] == [
        (code, c.minor_units, fraction_text(c.points_per_unit))
        for code, c in sorted(RULES.currencies.items())
    ]
    assert {c.currency_code: c.points_per_unit for c in earning.currencies}["HKD"] == "9/10"
    assert dict(earning.category_multipliers_bps) == dict(RULES.category_multipliers_bps)
    assert list(earning.non_earning_categories) == sorted(RULES.non_earning_categories)
    assert (earning.cap_per_payment, earning.cap_per_member_day) == (5000, 20000)
    assert (earning.rounding, earning.tier_multiplier_bps) == (pb.ROUNDING_DOWN, 10000)
    assert (earning.pending_days, earning.expiry_months) == (7, 12)
    assert (earning.referral_bonus_referrer, earning.referral_bonus_referee) == (200, 100)
    limits = {limit.reason: limit.max_points for limit in earning.grant_limits}
    assert limits[pb.GRANT_REASON_GOODWILL] == RULES.grants["GOODWILL"].max_points
    assert len(limits) == len(RULES.grants)
    tiers = got.tiers
    assert [(t.code, t.display_name, t.threshold) for t in tiers.tiers] == [
        (t.code, t.name, t.threshold) for t in RULES.tiers
    ]
    assert [(t.earn_multiplier_bps, t.discount_bps, dict(t.perks)) for t in tiers.tiers] == [
        (t.earn_multiplier_bps, t.discount_bps, dict(t.perks)) for t in RULES.tiers
    ]
    assert (tiers.qualifying_window_days, tiers.downgrade_grace_days) == (365, 30)
    assert got.refunds == pb.RefundRules(
        policy=pb.REFUND_POLICY_WITHIN_BALANCE,
        negative_floor=0,
        clawback_rounding=pb.ROUNDING_UP,
        points_owed=0,
    )
    assert got.spending.hold_ttl_seconds == RULES.hold_ttl_s


async def test_the_tier_and_its_distance_match_get_tier_progress(suite: Suite) -> None:
    member_id = await silver(suite)
    got = await explained(suite, member_id)
    shown = await progress(suite, member_id)
    assert got.tiers.progress == shown
    assert (shown.tier.code, shown.next_tier.code, shown.points_to_next_tier) == (
        "silver",
        "gold",
        4000,
    )
    assert got.earning.tier_multiplier_bps == 12500  # the member's tier's multiplier
    assert got.tiers.tier_rule_version == got.rule_version  # the tier was set under it
    assert "The member's tier is silver (银卡), with 1000 qualifying points in the window." in (
        got.summary
    )
    assert "4000 more qualifying points reach gold (金卡) within the current window." in (
        got.summary
    )
    fresh = await explained(suite, await known_member(suite))
    assert fresh.tiers.progress.tier.code == "basic"
    assert (fresh.tiers.progress.points_to_next_tier, fresh.tiers.tier_rule_version) == (1000, 0)


async def test_an_active_member_has_no_flags_and_the_summary_no_identifier(
    suite: Suite,
) -> None:
    member_id = await silver(suite)
    got = await explained(suite, member_id)
    assert got.member == f"members/{member_id}"
    assert got.member_state == pb.MEMBER_STATE_ACTIVE
    assert not got.restricted and not got.HasField("restriction")
    assert list(got.processing_paused_causes) == []
    assert len(got.summary) > 10
    assert not [s for s in got.summary if member_id in s]
    assert f"The program rules of version {got.rule_version} apply" in got.summary[0]
    assert "Payments earn 1 point per 1 CNY, 0.9 points per 1 HKD, 7.2 points per 1 USD." in (
        got.summary
    )


async def test_a_paused_member_shows_each_cause(suite: Suite) -> None:
    member_id = await known_member(suite)
    await apply(suite, event(member_id, RESTRICTION, True), event(member_id, CONSENT, True))
    got = await explained(suite, member_id)
    assert list(got.processing_paused_causes) == [CONSENT, RESTRICTION]
    assert not got.restricted
    assert any(s.startswith("Settling the member's new payments is paused") for s in got.summary)
    await apply(suite, event(member_id, CONSENT, False))
    got = await explained(suite, member_id)
    assert list(got.processing_paused_causes) == [RESTRICTION]
    await apply(suite, event(member_id, RESTRICTION, False))
    assert list((await explained(suite, member_id)).processing_paused_causes) == []


async def test_a_restricted_member_is_still_explained(suite: Suite) -> None:
    member_id = await silver(suite)
    record = await restricted(suite, restrict_request(member_id))
    # the member's own reads are refused, the explanation for the privacy service is not
    await expect_error(
        progress(suite, member_id), grpc.StatusCode.FAILED_PRECONDITION, reason="MEMBER_RESTRICTED"
    )
    got = await explained(suite, member_id)
    assert got.restricted and got.restriction == record
    assert got.tiers.progress.tier.code == "silver"
    assert got.summary[0].startswith("The member's points ledger is restricted after erasure")
    assert not [s for s in got.summary if record.legal_basis in s]  # free text stays out
    assert not [s for s in got.summary if "still apply" in s]  # no refund applies any more


async def test_a_member_not_active_is_told_so(suite: Suite) -> None:
    member_id = await known_member(suite, pb.MEMBER_STATE_FROZEN)
    got = await explained(suite, member_id)
    assert got.member_state == pb.MEMBER_STATE_FROZEN
    assert any(s.startswith("The member's account is frozen") for s in got.summary)


async def test_other_rules_and_a_member_in_debt(suite: Suite, lenient: Stub) -> None:
    member_id = await known_member(suite)
    await settle(lenient, suite, payment(member_id, "p-1", 1234))  # 24 points, pending
    got = await explained(suite, member_id, lenient)
    assert got.rule_version != (await explained(suite, member_id)).rule_version
    assert (got.refunds.policy, got.refunds.negative_floor) == (
        pb.REFUND_POLICY_ALLOW_NEGATIVE,
        1000,
    )
    assert got.earning.cap_per_member_day == 0  # no daily cap
    assert "Caps, applied after rounding: at most 5000 points per payment, none per day" in (
        " ".join(got.summary)
    )
    await settle(lenient, suite, payment(member_id, "p-2", 1000, occurred=OLD))
    await spend(suite, member_id, 20)
    await refunded(lenient, suite, refund(member_id, "p-2", "r-1", 1000))
    got = await explained(suite, member_id, lenient)
    assert got.refunds.points_owed == 20
    assert "The member owes 20 points from earlier refunds." in got.summary


async def test_unknown_and_malformed_members(suite: Suite) -> None:
    await expect_error(explained(suite, "mnobody"), grpc.StatusCode.NOT_FOUND)
    for bad in ("", "members/", "members/a-b", "accounts/m1", "members/m1/rules"):
        err = await rpc_error(
            suite.points.ExplainMemberRules(
                pb.ExplainMemberRulesRequest(member=bad), metadata=suite.auth("service:privacy")
            )
        )
        assert (err.code, err.fields) == (grpc.StatusCode.INVALID_ARGUMENT, {"member"}), bad


async def test_only_the_privacy_service_may_call(suite: Suite) -> None:
    scope = METHOD_SCOPES[METHOD]
    assert {role for role, scopes in ROLE_SCOPES.items() if scope in scopes} == {"service:privacy"}
    member_id = await known_member(suite)
    for role in ("wallet-backend", "officer", "settlement"):
        await expect_error(
            suite.points.ExplainMemberRules(
                pb.ExplainMemberRulesRequest(member=f"members/{member_id}"),
                metadata=suite.auth(role),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
