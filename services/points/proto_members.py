"""Protobuf <-> domain of ApplyMemberEvents (the accounts outbox relay's door)."""

from __future__ import annotations

from datetime import UTC

from membership.points.v1 import points_pb2 as pb

from services.points.domain.members import MAX_EVENTS, EventsApplied, MemberEvent
from services.points.proto import MEMBER_EVENT_TYPES, MEMBER_STATES
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of


def check_count(v: ViolationCollector, count: int) -> None:
    """Of either relay's events (member events, processing events)."""
    if not 1 <= count <= MAX_EVENTS:
        v.add("events", f"between 1 and {MAX_EVENTS} events")


def events_of(request: pb.ApplyMemberEventsRequest) -> list[MemberEvent]:
    v = ViolationCollector()
    check_count(v, len(request.events))
    events = [_event_of(v, i, e) for i, e in enumerate(request.events)]
    v.raise_if_any()
    return events


def applied_pb(done: EventsApplied) -> pb.ApplyMemberEventsResponse:
    return pb.ApplyMemberEventsResponse(applied=done.applied, skipped=done.skipped)


def _event_of(v: ViolationCollector, i: int, event: pb.MemberEvent) -> MemberEvent:
    member_id = member_id_of(v, event.member, f"events[{i}].member")
    referred_by = ""
    if event.referred_by:
        referred_by = member_id_of(v, event.referred_by, f"events[{i}].referred_by")
    if event.event_id <= 0:
        v.add(f"events[{i}].event_id", "must be positive")
    if event.type not in MEMBER_EVENT_TYPES:
        v.add(f"events[{i}].type", "unknown event type")
    if event.state not in MEMBER_STATES:
        v.add(f"events[{i}].state", "unknown member state")
    if not event.HasField("event_time"):
        v.add(f"events[{i}].event_time", "required")
    return MemberEvent(
        event_id=event.event_id,
        member_id=member_id,
        type=MEMBER_EVENT_TYPES.get(event.type, ""),
        state=MEMBER_STATES.get(event.state, ""),
        referred_by=referred_by or None,
        event_time=event.event_time.ToDatetime(tzinfo=UTC),
    )
