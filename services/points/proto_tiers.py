"""Protobuf <-> domain of GetTierProgress (and the tiers GetProgram and ExplainMemberRules
show)."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.rules import Tier
from services.points.domain.tiers import Progress
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

SUFFIX = "/tierProgress"


def tier_pb(tier: Tier) -> pb.Tier:
    return pb.Tier(
        code=tier.code,
        display_name=tier.name,
        threshold=tier.threshold,
        earn_multiplier_bps=tier.earn_multiplier_bps,
        discount_bps=tier.discount_bps,
        perks=dict(tier.perks),
    )


def progress_pb(member_id: str, got: Progress) -> pb.TierProgress:
    state = got.state
    return pb.TierProgress(
        name=member_name(member_id) + SUFFIX,
        tier=tier_pb(got.tier),
        tier_start_time=timestamp(state.since if state else None),
        qualifying_points=got.qualifying,
        window_start_time=timestamp(got.window_start),
        window_end_time=timestamp(got.window_end),
        next_tier=tier_pb(got.next_tier) if got.next_tier else None,
        points_to_next_tier=got.points_needed,
        next_tier_deadline_time=timestamp(got.window_end if got.next_tier else None),
        review_time=timestamp(state.review_at if state else None),
        grace_end_time=timestamp(state.grace_until if state else None),
    )


def member_of(request: pb.GetTierProgressRequest) -> str:
    v = ViolationCollector()
    member_id = member_id_of(v, request.name, "name", SUFFIX)
    v.raise_if_any()
    return member_id
