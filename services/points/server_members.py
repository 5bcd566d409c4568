"""gRPC <-> domain: ApplyMemberEvents (the accounts outbox relay's door)."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_members import applied_pb, events_of
from services.points.server_base import RpcGroup


class MemberRpcs(RpcGroup):
    async def ApplyMemberEvents(
        self, request: pb.ApplyMemberEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyMemberEventsResponse:
        return applied_pb(await self.deps.members.apply(events_of(request)))
