"""Protobuf <-> domain of GetProgram (the program in force) and ExplainMemberRules."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.program import MemberRules, ProgramRules
from services.points.domain.rules import RefundPolicy, Rules, fraction_text
from services.points.proto import CAUSE_PB, GRANT_REASON_PB, STATE_PB, timestamp
from services.points.proto_restrictions import restriction_pb
from services.points.proto_tiers import progress_pb, tier_pb
from services.runtime.errors import ViolationCollector, bad_field
from services.runtime.names import member_id_of, member_name

PROGRAM_NAME = "program"
REFUND_POLICIES = {
    RefundPolicy.WITHIN_BALANCE: pb.REFUND_POLICY_WITHIN_BALANCE,
    RefundPolicy.ALLOW_NEGATIVE: pb.REFUND_POLICY_ALLOW_NEGATIVE,
}


def earning_pb(rules: Rules, tier_multiplier_bps: int = 0) -> pb.EarningRules:
    return pb.EarningRules(
        currencies=[
            pb.CurrencyEarnRate(
                currency_code=code,
                minor_units=c.minor_units,
                points_per_unit=fraction_text(c.points_per_unit),
            )
            for code, c in sorted(rules.currencies.items())
        ],
        category_multipliers_bps=dict(rules.category_multipliers_bps),
        non_earning_categories=sorted(rules.non_earning_categories),
        tier_multiplier_bps=tier_multiplier_bps,
        cap_per_payment=rules.cap_per_payment or 0,
        cap_per_member_day=rules.cap_per_member_day or 0,
        rounding=pb.ROUNDING_DOWN,
        pending_days=rules.pending_days,
        expiry_months=rules.expiry_months,
        referral_bonus_referrer=rules.referral_bonus_referrer,
        referral_bonus_referee=rules.referral_bonus_referee,
        grant_limits=[
            pb.GrantLimit(reason=GRANT_REASON_PB[reason], max_points=g.max_points)
            for reason, g in rules.grants.items()
        ],
        max_settlement_delay_days=rules.settlement_delay_limit_days,
        known_categories=sorted(rules.known_categories or ()),
    )


def program_tiers_pb(rules: Rules) -> pb.TierRules:
    return pb.TierRules(
        tiers=[tier_pb(t) for t in rules.tiers],
        qualifying_window_days=rules.qualifying_window_days,
        downgrade_grace_days=rules.downgrade_grace_days,
    )


def tiers_pb(got: MemberRules) -> pb.TierRules:
    state = got.facts.tier
    message = program_tiers_pb(got.rules)
    message.progress.CopyFrom(progress_pb(got.member_id, got.progress))
    message.tier_rule_version = 0 if state is None else state.rule_version
    return message


def refunds_pb(rules: Rules, points_owed: int = 0) -> pb.RefundRules:
    return pb.RefundRules(
        policy=REFUND_POLICIES[rules.refund_policy],
        negative_floor=rules.negative_floor,
        clawback_rounding=pb.ROUNDING_UP,
        points_owed=points_owed,
    )


def program_pb(got: ProgramRules) -> pb.Program:
    rules = got.rules
    return pb.Program(
        name=PROGRAM_NAME,
        rule_version=got.rule_version,
        rule_effective_time=timestamp(got.effective_at),
        time_zone=rules.timezone,
        earning=earning_pb(rules),
        tiers=program_tiers_pb(rules),
        refunds=refunds_pb(rules),
        spending=pb.SpendingRules(hold_ttl_seconds=rules.hold_ttl_s),
        summary=list(got.summary),
    )


def explanation_pb(got: MemberRules) -> pb.MemberRulesExplanation:
    facts, rules = got.facts, got.rules
    return pb.MemberRulesExplanation(
        member=member_name(got.member_id),
        rule_version=got.rule_version,
        rule_effective_time=timestamp(got.effective_at),
        time_zone=rules.timezone,
        earning=earning_pb(rules, got.progress.tier.earn_multiplier_bps),
        tiers=tiers_pb(got),
        refunds=refunds_pb(got.rules, got.points_owed),
        spending=pb.SpendingRules(hold_ttl_seconds=rules.hold_ttl_s),
        member_state=STATE_PB.get(facts.state, pb.MEMBER_STATE_UNSPECIFIED),
        restricted=facts.restriction is not None,
        restriction=None if facts.restriction is None else restriction_pb(facts.restriction),
        processing_paused_causes=[
            CAUSE_PB.get(c, pb.PROCESSING_CAUSE_UNSPECIFIED) for c in facts.paused_causes
        ],
        summary=list(got.summary),
    )


def check_program_name(request: pb.GetProgramRequest) -> None:
    if request.name != PROGRAM_NAME:
        raise bad_field("name", f"must be {PROGRAM_NAME}")


def member_of(request: pb.ExplainMemberRulesRequest) -> str:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.raise_if_any()
    return member_id
