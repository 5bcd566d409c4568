"""gRPC <-> domain: ApplyMemberEvents (the accounts outbox relay's door) and
ApplyProcessingEvents (the privacy outbox relay's)."""

from __future__ import annotations

from datetime import UTC

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.member_events import MemberEvent
from services.points.processing import ProcessingEvent, ProcessingPauses
from services.points.server_base import RpcGroup
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of

MAX_EVENTS = 500
EVENT_TYPES = {
    pb.MEMBER_EVENT_TYPE_REGISTERED: "REGISTERED",
    pb.MEMBER_EVENT_TYPE_STATUS_CHANGED: "STATUS_CHANGED",
}
CAUSES = {
    pb.PROCESSING_CAUSE_CONSENT_WITHDRAWN: "CONSENT_WITHDRAWN",
    pb.PROCESSING_CAUSE_RESTRICTION_REQUESTED: "RESTRICTION_REQUESTED",
}
MEMBER_STATES = {
    pb.MEMBER_STATE_ACTIVE: "ACTIVE",
    pb.MEMBER_STATE_FROZEN: "FROZEN",
    pb.MEMBER_STATE_CLOSED: "CLOSED",
    pb.MEMBER_STATE_ERASED: "ERASED",
}


def _event_of(v: ViolationCollector, i: int, event: pb.MemberEvent) -> MemberEvent:
    member_id = member_id_of(v, event.member, f"events[{i}].member")
    referred_by = ""
    if event.referred_by:
        referred_by = member_id_of(v, event.referred_by, f"events[{i}].referred_by")
    if event.event_id <= 0:
        v.add(f"events[{i}].event_id", "must be positive")
    if event.type not in EVENT_TYPES:
        v.add(f"events[{i}].type", "unknown event type")
    if event.state not in MEMBER_STATES:
        v.add(f"events[{i}].state", "unknown member state")
    if not event.HasField("event_time"):
        v.add(f"events[{i}].event_time", "required")
    return MemberEvent(
        event_id=event.event_id,
        member_id=member_id,
        type=EVENT_TYPES.get(event.type, ""),
        state=MEMBER_STATES.get(event.state, ""),
        referred_by=referred_by or None,
        event_time=event.event_time.ToDatetime(tzinfo=UTC),
    )


def _processing_event_of(
    v: ViolationCollector, i: int, event: pb.ProcessingEvent
) -> ProcessingEvent:
    member_id = member_id_of(v, event.member, f"events[{i}].member")
    if event.event_id <= 0:
        v.add(f"events[{i}].event_id", "must be positive")
    if event.cause not in CAUSES:
        v.add(f"events[{i}].cause", "unknown cause")
    if not event.HasField("event_time"):
        v.add(f"events[{i}].event_time", "required")
    return ProcessingEvent(
        event_id=event.event_id,
        member_id=member_id,
        cause=CAUSES.get(event.cause, ""),
        paused=event.paused,
        event_time=event.event_time.ToDatetime(tzinfo=UTC),
    )


def _check_count(v: ViolationCollector, count: int) -> None:
    if not 1 <= count <= MAX_EVENTS:
        v.add("events", f"between 1 and {MAX_EVENTS} events")


class MemberEventRpcs(RpcGroup):
    async def ApplyMemberEvents(
        self, request: pb.ApplyMemberEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyMemberEventsResponse:
        v = ViolationCollector()
        _check_count(v, len(request.events))
        events = [_event_of(v, i, e) for i, e in enumerate(request.events)]
        v.raise_if_any()
        applied, skipped = await self.deps.members.apply(events)
        return pb.ApplyMemberEventsResponse(applied=applied, skipped=skipped)

    async def ApplyProcessingEvents(
        self, request: pb.ApplyProcessingEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyProcessingEventsResponse:
        v = ViolationCollector()
        _check_count(v, len(request.events))
        events = [_processing_event_of(v, i, e) for i, e in enumerate(request.events)]
        v.raise_if_any()
        applied, skipped = await ProcessingPauses(self.deps.pool).apply(events)
        return pb.ApplyProcessingEventsResponse(applied=applied, skipped=skipped)
