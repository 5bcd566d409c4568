"""gRPC <-> domain: ExplainMemberRules (internal, for the privacy service)."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.rules import Rules, fraction_text
from services.points.rules_explanation import MemberRules, RulesExplainer
from services.points.server_base import RpcGroup, timestamp
from services.points.server_grants import REASONS_PB
from services.points.server_members import CAUSES, MEMBER_STATES
from services.points.server_privacy import restriction_pb
from services.points.server_tiers import progress_pb, tier_pb
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

REFUND_POLICIES = {
    "within_balance": pb.REFUND_POLICY_WITHIN_BALANCE,
    "allow_negative": pb.REFUND_POLICY_ALLOW_NEGATIVE,
}
# the mappings of requests read the other way
STATE_OF = {text: value for value, text in MEMBER_STATES.items()}
CAUSE_OF = {text: value for value, text in CAUSES.items()}


def earning_pb(rules: Rules, tier_multiplier_bps: int) -> pb.EarningRules:
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
            pb.GrantLimit(reason=REASONS_PB[reason], max_points=g.max_points)
            for reason, g in rules.grants.items()
        ],
    )


def tiers_pb(got: MemberRules) -> pb.TierRules:
    rules, state = got.rules, got.facts.tier
    return pb.TierRules(
        tiers=[tier_pb(t) for t in rules.tiers],
        qualifying_window_days=rules.qualifying_window_days,
        downgrade_grace_days=rules.downgrade_grace_days,
        progress=progress_pb(got.member_id, got.progress),
        tier_rule_version=0 if state is None else state.rule_version,
    )


def refunds_pb(got: MemberRules) -> pb.RefundRules:
    return pb.RefundRules(
        policy=REFUND_POLICIES[got.rules.refund_policy],
        negative_floor=got.rules.negative_floor,
        clawback_rounding=pb.ROUNDING_UP,
        points_owed=got.points_owed,
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
        refunds=refunds_pb(got),
        spending=pb.SpendingRules(hold_ttl_seconds=rules.hold_ttl_s),
        member_state=STATE_OF.get(facts.state, pb.MEMBER_STATE_UNSPECIFIED),
        restricted=facts.restriction is not None,
        restriction=None if facts.restriction is None else restriction_pb(facts.restriction),
        processing_paused_causes=[
            CAUSE_OF.get(c, pb.PROCESSING_CAUSE_UNSPECIFIED) for c in facts.paused_causes
        ],
        summary=list(got.summary),
    )


class RulesRpcs(RpcGroup):
    async def ExplainMemberRules(
        self, request: pb.ExplainMemberRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberRulesExplanation:
        v = ViolationCollector()
        member_id = member_id_of(v, request.member, "member")
        v.raise_if_any()
        explainer = RulesExplainer(self.deps.pool, self.deps.ledger.rules, self.deps.clock)
        return explanation_pb(await explainer.explain(member_id))
