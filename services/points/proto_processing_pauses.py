"""Protobuf <-> domain of ApplyProcessingEvents (the privacy outbox relay's door)."""

from __future__ import annotations

from datetime import UTC

from membership.points.v1 import points_pb2 as pb

from services.points.domain.members import EventsApplied
from services.points.domain.processing_pauses import ProcessingEvent
from services.points.proto import CAUSES
from services.points.proto_members import check_count
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of


def events_of(request: pb.ApplyProcessingEventsRequest) -> list[ProcessingEvent]:
    v = ViolationCollector()
    check_count(v, len(request.events))
    events = [_processing_event_of(v, i, e) for i, e in enumerate(request.events)]
    v.raise_if_any()
    return events


def applied_pb(done: EventsApplied) -> pb.ApplyProcessingEventsResponse:
    return pb.ApplyProcessingEventsResponse(applied=done.applied, skipped=done.skipped)


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
