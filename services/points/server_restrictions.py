"""gRPC <-> domain: RestrictMember (internal, for the privacy service)."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_restrictions import restrict_request_of, restriction_pb
from services.points.server_base import RpcGroup


class RestrictionRpcs(RpcGroup):
    async def RestrictMember(
        self, request: pb.RestrictMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberRestriction:
        restricted = await self.deps.restrictions.restrict(restrict_request_of(request))
        return restriction_pb(restricted)
