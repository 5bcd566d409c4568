"""gRPC <-> domain: ApplyProcessingEvents (the privacy outbox relay's door)."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_processing_pauses import applied_pb, events_of
from services.points.server_base import RpcGroup


class ProcessingPauseRpcs(RpcGroup):
    async def ApplyProcessingEvents(
        self, request: pb.ApplyProcessingEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyProcessingEventsResponse:
        return applied_pb(await self.deps.processing_pauses.apply(events_of(request)))
