"""The MemberEventsPort over gRPC: accounts' outbox events as points' MemberEvents, sent with
ApplyMemberEvents."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.accounts.domain.events import EventType, OutboxEvent
from services.accounts.domain.lifecycle import Status
from services.runtime.clients import OutboxSender
from services.runtime.names import member_name
from services.runtime.outbox_relay import MalformedEventError

# by the status as the payload holds it (text)
STATES: dict[str, pb.MemberState.ValueType] = {
    Status.ACTIVE: pb.MEMBER_STATE_ACTIVE,
    Status.FROZEN: pb.MEMBER_STATE_FROZEN,
    Status.CLOSED: pb.MEMBER_STATE_CLOSED,
    Status.ERASED: pb.MEMBER_STATE_ERASED,
}


def _state(event: OutboxEvent, key: str) -> pb.MemberState.ValueType:
    state = STATES.get(str(event.payload.get(key, "")))
    if state is None:
        raise MalformedEventError(event.event_id)
    return state


def to_member_event(event: OutboxEvent) -> pb.MemberEvent:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(event.created_at)
    message = pb.MemberEvent(
        event_id=event.event_id, member=member_name(event.member_id), event_time=time
    )
    if event.event_type == EventType.REGISTERED:
        referred_by = event.payload.get("referred_by") or ""
        if not isinstance(referred_by, str):
            raise MalformedEventError(event.event_id)
        message.type = pb.MEMBER_EVENT_TYPE_REGISTERED
        message.state = _state(event, "status")
        message.referred_by = member_name(referred_by) if referred_by else ""
    elif event.event_type == EventType.STATUS_CHANGED:
        message.type = pb.MEMBER_EVENT_TYPE_STATUS_CHANGED
        message.state = _state(event, "to_status")
    else:
        raise MalformedEventError(event.event_id)
    return message


class PointsPublisher(OutboxSender):
    """ApplyMemberEvents over gRPC, as service:accounts, within the outgoing deadline, on a
    channel replaced after UNAVAILABLE (runtime.clients.OutboxSender)."""

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        request = pb.ApplyMemberEventsRequest(events=[to_member_event(e) for e in events])
        await self.send(
            lambda channel, timeout_s, metadata: pb_grpc.PointsServiceStub(
                channel
            ).ApplyMemberEvents(request, timeout=timeout_s, metadata=metadata)
        )
