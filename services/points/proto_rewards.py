"""Protobuf <-> domain of ListRewards and RedeemReward."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.rewards import (
    SKU,
    RedeemRewardRequest,
    Reward,
    RewardQuery,
    RewardRedemption,
)
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_QUANTITY = 10  # a cart-sized bound: keeps one call's points and stock take small


def query_of(request: pb.ListRewardsRequest) -> RewardQuery:
    member_id = ""
    if request.available_to:
        v = ViolationCollector()
        member_id = member_id_of(v, request.available_to, "available_to")
        v.raise_if_any()
    return RewardQuery(member_id, request.page_size, request.page_token)


def redeem_reward_of(request: pb.RedeemRewardRequest) -> RedeemRewardRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    if not SKU.fullmatch(request.sku):
        v.add("sku", "must be a sku of the catalogue")
    v.request_id(request.request_id, "request_id")
    quantity = request.quantity or 1
    if not 1 <= quantity <= MAX_QUANTITY:
        v.add("quantity", f"must be between 1 and {MAX_QUANTITY}")
    v.raise_if_any()
    return RedeemRewardRequest(member_id, request.sku, request.request_id, quantity)


def reward_pb(row: Reward) -> pb.Reward:
    return pb.Reward(
        name=f"rewards/{row.sku}",
        sku=row.sku,
        display_name=row.name,
        points_cost=row.points_cost,
        stock=row.stock or 0,
        unlimited_stock=row.stock is None,
        per_member_limit=row.per_member_limit or 0,
        min_tier=row.min_tier,
        active=row.active,
        coupon_template=f"couponTemplates/{row.coupon_template}" if row.coupon_template else "",
    )


def reward_redemption_pb(result: RewardRedemption) -> pb.RewardRedemption:
    member = member_name(result.member_id)
    return pb.RewardRedemption(
        name=f"{member}/rewardRedemptions/{result.request_id}",
        sku=result.sku,
        quantity=result.quantity,
        points=result.points,
        transaction=f"{member}/transactions/{result.txn_id}",
        lots=[pb.LotTaken(points=p, expire_time=timestamp(at)) for _, p, at in result.lots],
        rule_version=result.rule_version,
        coupons=[f"{member}/coupons/{code}" for code in result.coupons],
    )
