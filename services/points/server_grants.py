"""gRPC <-> domain: GrantPoints."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_grants import grant_pb, grant_request_of
from services.points.server_base import RpcGroup
from services.runtime.context import current_caller


class GrantRpcs(RpcGroup):
    async def GrantPoints(
        self, request: pb.GrantPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Grant:
        grant = grant_request_of(request)
        granted = self.deps.grants.grant(current_caller(), grant)
        return grant_pb(await self.for_known_member(grant.member_id, granted))
