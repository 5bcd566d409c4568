"""The accounts outbox's relay: delivers member events to points (ApplyMemberEvents), at
least once. The loop, lock, backoff and logging are the runtime's (runtime/outbox_relay.py);
this module says which events, how they become points' MemberEvents, and how to send them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.accounts import store
from services.accounts.model import member_name
from services.runtime import outbox_relay as relay
from services.runtime.clients import ReconnectingChannel, ServiceCredentials
from services.runtime.db import Conn
from services.runtime.outbox_relay import Backoff, MalformedEventError

__all__ = ["Backoff", "MalformedEventError", "OutboxRelay", "PointsPublisher", "to_member_event"]

BATCH_SIZE = 500  # ApplyMemberEvents takes at most 500 events

REGISTERED = "member.registered"
STATUS_CHANGED = "member.status_changed"
EVENT_TYPES = (REGISTERED, STATUS_CHANGED)
STATES = {
    "ACTIVE": pb.MEMBER_STATE_ACTIVE,
    "FROZEN": pb.MEMBER_STATE_FROZEN,
    "CLOSED": pb.MEMBER_STATE_CLOSED,
    "ERASED": pb.MEMBER_STATE_ERASED,
}


def _state(event: store.OutboxEvent, key: str) -> pb.MemberState.ValueType:
    state = STATES.get(str(event.payload.get(key, "")))
    if state is None:
        raise MalformedEventError(event.event_id)
    return state


def to_member_event(event: store.OutboxEvent) -> pb.MemberEvent:
    time = timestamp_pb2.Timestamp()
    time.FromDatetime(event.created_at)
    message = pb.MemberEvent(
        event_id=event.event_id, member=member_name(event.member_id), event_time=time
    )
    if event.event_type == REGISTERED:
        referred_by = event.payload.get("referred_by") or ""
        if not isinstance(referred_by, str):
            raise MalformedEventError(event.event_id)
        message.type = pb.MEMBER_EVENT_TYPE_REGISTERED
        message.state = _state(event, "status")
        message.referred_by = member_name(referred_by) if referred_by else ""
    elif event.event_type == STATUS_CHANGED:
        message.type = pb.MEMBER_EVENT_TYPE_STATUS_CHANGED
        message.state = _state(event, "to_status")
    else:
        raise MalformedEventError(event.event_id)
    return message


class Publisher(Protocol):
    async def publish(self, events: Sequence[pb.MemberEvent]) -> None: ...


class PointsPublisher:
    """ApplyMemberEvents over gRPC, as service:accounts, within the outgoing deadline, on a
    channel replaced after UNAVAILABLE (runtime.clients.ReconnectingChannel)."""

    def __init__(
        self,
        connect: Callable[[], grpc.aio.Channel],
        credentials: ServiceCredentials,
        timeout_s: float,
    ) -> None:
        self._channel = ReconnectingChannel(connect)
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def publish(self, events: Sequence[pb.MemberEvent]) -> None:
        request = pb.ApplyMemberEventsRequest(events=events)
        await self._channel.call(
            lambda channel: pb_grpc.PointsServiceStub(channel).ApplyMemberEvents(
                request, timeout=self._timeout_s, metadata=self._credentials.metadata()
            )
        )

    async def close(self) -> None:
        await self._channel.close()


class MemberEventsOutbox:
    """accounts.outbox, as its relay takes, delivers and marks it."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    async def take(self, conn: Conn, limit: int) -> Sequence[store.OutboxEvent] | None:
        if not await store.try_lock_outbox(conn):
            return None
        return await store.unpublished_events(conn, EVENT_TYPES, limit)

    async def deliver(self, events: Sequence[store.OutboxEvent]) -> None:
        await self._publisher.publish([to_member_event(e) for e in events])

    async def mark(self, conn: Conn, events: Sequence[store.OutboxEvent]) -> None:
        await store.mark_published(conn, events)

    def last_event_id(self, events: Sequence[store.OutboxEvent]) -> int:
        return events[-1].event_id


class OutboxRelay(relay.OutboxRelay[store.OutboxEvent]):
    """The relay of accounts' member events to points."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        batch_size: int = BATCH_SIZE,
        idle_poll_s: float = relay.IDLE_POLL_S,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(
            pool,
            MemberEventsOutbox(publisher),
            name="accounts",
            batch_size=batch_size,
            idle_poll_s=idle_poll_s,
            backoff=backoff,
        )
