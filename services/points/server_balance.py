"""gRPC <-> domain: GetBalance."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_balance import balance_pb, member_of
from services.points.server_base import RpcGroup


class BalanceRpcs(RpcGroup):
    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Balance:
        member_id = member_of(request)
        row, expiring, coupons = await self.deps.balances.balance(member_id)
        return balance_pb(request.name, row, expiring, coupons)
