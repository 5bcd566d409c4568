"""gRPC <-> domain: ListRewards, RedeemReward."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_rewards import (
    query_of,
    redeem_reward_of,
    reward_pb,
    reward_redemption_pb,
)
from services.points.server_base import RpcGroup


class RewardRpcs(RpcGroup):
    async def ListRewards(
        self, request: pb.ListRewardsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRewardsResponse:
        rows, token = await self.deps.rewards.list_rewards(query_of(request))
        return pb.ListRewardsResponse(rewards=[reward_pb(r) for r in rows], next_page_token=token)

    async def RedeemReward(
        self, request: pb.RedeemRewardRequest, context: grpc.aio.ServicerContext
    ) -> pb.RewardRedemption:
        redeem = redeem_reward_of(request)
        redeemed = self.deps.rewards.redeem_reward(redeem)
        return reward_redemption_pb(await self.for_known_member(redeem.member_id, redeemed))
