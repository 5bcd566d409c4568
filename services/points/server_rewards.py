"""gRPC <-> domain: ListRewards, RedeemReward; and the catalogue sync at start."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.ledger import RulesInForce
from services.points.rewards import RedeemRewardRequest, RewardQuery, RewardRedemption, Rewards
from services.points.rewards_catalogue import SKU, load_catalogue_file
from services.points.server_base import RpcGroup, timestamp
from services.points.store import rewards as store
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_QUANTITY = 10  # a cart-sized bound: keeps one call's points and stock take small


async def sync_rewards(pool: asyncpg.Pool, rules: RulesInForce, path: Path) -> None:
    """Loads the catalogue file (validated against the rules in force) into points.rewards."""
    entries = load_catalogue_file(path, rules.rules)
    async with pool.acquire() as conn:
        await store.sync_catalogue(conn, entries)


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


def reward_pb(row: store.RewardRow) -> pb.Reward:
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
    )


class RewardRpcs(RpcGroup):
    def _rewards(self) -> Rewards:
        # cheap: the rules in force are the ledger's, read at every call
        deps = self.deps
        return Rewards(deps.pool, deps.members, deps.ledger.rules, deps.clock)

    async def ListRewards(
        self, request: pb.ListRewardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRewardsResponse:
        rows, token = await self._rewards().list_rewards(query_of(request))
        return pb.ListRewardsResponse(rewards=[reward_pb(r) for r in rows], next_page_token=token)

    async def RedeemReward(
        self, request: pb.RedeemRewardRequest, context: grpc.aio.ServicerContext
    ) -> pb.RewardRedemption:
        redeem = redeem_reward_of(request)
        result = await self.for_known_member(
            redeem.member_id, self._rewards().redeem_reward(redeem)
        )
        return reward_redemption_pb(result)
