"""The sender of privacy's outbox: processing pauses, delivered to points through
ApplyProcessingEvents (processing_relay.py takes and marks them).

A failed delivery raises the call's grpc.aio.AioRpcError as it came: the runtime's relay logs
its code and backs off, as for every outbox."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.privacy.domain.processing import PauseCause, PauseEvent
from services.runtime.clients import OutboxSender
from services.runtime.outbox_relay import MalformedEventError

BATCH_SIZE = 500  # ApplyProcessingEvents takes at most 500 events
CAUSES = {
    PauseCause.CONSENT_WITHDRAWN: pb.PROCESSING_CAUSE_CONSENT_WITHDRAWN,
    PauseCause.RESTRICTION_REQUESTED: pb.PROCESSING_CAUSE_RESTRICTION_REQUESTED,
}


def to_processing_event(event: PauseEvent) -> pb.ProcessingEvent:
    cause = CAUSES.get(event.cause)
    if cause is None:
        raise MalformedEventError(event.event_id)
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(event.created_at)
    return pb.ProcessingEvent(
        event_id=event.event_id,
        member=f"members/{event.member_id}",
        cause=cause,
        paused=event.paused,
        event_time=time,
    )


class ProcessingEventsPort(OutboxSender):
    async def apply(self, events: Sequence[PauseEvent]) -> None:
        """Points applies them idempotently, in order; at most BATCH_SIZE at a time."""
        request = pb.ApplyProcessingEventsRequest(events=[to_processing_event(e) for e in events])
        await self.send(
            lambda channel, timeout_s, metadata: pb_grpc.PointsServiceStub(
                channel
            ).ApplyProcessingEvents(request, timeout=timeout_s, metadata=metadata)
        )
