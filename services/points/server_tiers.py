"""gRPC <-> domain: GetTierProgress."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_tiers import member_of, progress_pb
from services.points.server_base import RpcGroup


class TierRpcs(RpcGroup):
    async def GetTierProgress(
        self, request: pb.GetTierProgressRequest, context: grpc.aio.ServicerContext
    ) -> pb.TierProgress:
        member_id = member_of(request)
        return progress_pb(member_id, await self.deps.tiers.progress(member_id))
