"""The outbox relay: delivers accounts' member events to points, at least once.

A background loop takes a batch of unpublished events (in event order) inside a transaction
that holds a transaction-level advisory lock, so that one relay works at a time across
replicas; it calls points' ApplyMemberEvents and marks the batch published in that same
transaction. If points is down or refuses, the transaction rolls back, nothing is marked
and the batch is tried again after an exponential backoff. Points applies events
idempotently and tolerates any order, so a batch delivered twice (marked after points
applied it, but the commit failed) does no harm.

The relay polls: every IDLE_POLL_S when there is nothing to send, at once again after a full
batch. Polling rather than an in-process wake-up, because the event may be written by
another replica than the one holding the lock; it costs one indexed query per interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.accounts import store
from services.accounts.model import member_name
from services.runtime.clients import ServiceCredentials
from services.runtime.context import new_request_id, set_request_id

log = logging.getLogger("membership.accounts.relay")

BATCH_SIZE = 500  # ApplyMemberEvents takes at most 500 events
IDLE_POLL_S = 0.5
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

REGISTERED = "member.registered"
STATUS_CHANGED = "member.status_changed"
EVENT_TYPES = (REGISTERED, STATUS_CHANGED)
STATES = {
    "ACTIVE": pb.MEMBER_STATE_ACTIVE,
    "FROZEN": pb.MEMBER_STATE_FROZEN,
    "CLOSED": pb.MEMBER_STATE_CLOSED,
    "ERASED": pb.MEMBER_STATE_ERASED,
}


class MalformedEventError(ValueError):
    """An outbox event that cannot be expressed as a points MemberEvent (a bug in accounts):
    the relay stops at it, and says which, rather than lose or reorder events."""

    def __init__(self, event_id: int) -> None:
        super().__init__(f"outbox event {event_id} is malformed")
        self.event_id = event_id


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
    """ApplyMemberEvents over gRPC, as service:accounts, within the outgoing deadline.

    After UNAVAILABLE the channel is replaced by a fresh one: a channel's own reconnection
    backoff grows to two minutes over a long outage, while a fresh channel connects at once,
    so points is reached again within the relay's backoff (at most BACKOFF_MAX_S) of its
    return.
    """

    def __init__(
        self,
        connect: Callable[[], grpc.aio.Channel],
        credentials: ServiceCredentials,
        timeout_s: float,
    ) -> None:
        self._connect = connect
        self._channel = connect()
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def publish(self, events: Sequence[pb.MemberEvent]) -> None:
        stub = pb_grpc.PointsServiceStub(self._channel)
        try:
            await stub.ApplyMemberEvents(
                pb.ApplyMemberEventsRequest(events=events),
                timeout=self._timeout_s,
                metadata=self._credentials.metadata(),
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.UNAVAILABLE:
                stale, self._channel = self._channel, self._connect()
                await stale.close()
            raise

    async def close(self) -> None:
        await self._channel.close()


class Backoff:
    """Exponential delays: first_s, doubling up to max_s; reset after a success."""

    def __init__(self, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._next_s = first_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(self._max_s, self._next_s * 2)
        return delay

    def reset(self) -> None:
        self._next_s = self._first_s


def _error_fields(exc: Exception) -> dict[str, object]:
    """What may be logged of a failure: its kind and gRPC code, never a message (driver and
    remote messages can quote values)."""
    fields: dict[str, object] = {"error": type(exc).__name__}
    if isinstance(exc, grpc.aio.AioRpcError):
        fields["code"] = exc.code().name
    if isinstance(exc, MalformedEventError):
        fields["event_id"] = exc.event_id
    return fields


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: Publisher,
        *,
        batch_size: int = BATCH_SIZE,
        idle_poll_s: float = IDLE_POLL_S,
        backoff: Backoff | None = None,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._backoff = backoff or Backoff()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-relay")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # the batch in flight rolls back; it is delivered again by the next relay
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def relay_once(self) -> int:
        """Delivers one batch; the number of events published (0: nothing to send, or
        another relay holds the lock). Raises when the delivery failed; nothing is marked."""
        # one id per batch, in this task's own context: relay and points logs correlate
        set_request_id(new_request_id())
        async with self._pool.acquire() as conn, conn.transaction():
            if not await store.try_lock_outbox(conn):
                return 0
            events = await store.unpublished_events(conn, EVENT_TYPES, self._batch_size)
            if not events:
                return 0
            await self._publisher.publish([to_member_event(e) for e in events])
            await store.mark_published(conn, events)
        log.info(
            "outbox events published",
            extra={"fields": {"count": len(events), "last_event_id": events[-1].event_id}},
        )
        return len(events)

    def _failed(self, exc: Exception) -> float:
        """Logs a failed delivery; the delay before the next attempt."""
        delay = self._backoff.next_delay()
        # a malformed event stops the relay until fixed: an error, not a passing outage
        level = logging.ERROR if isinstance(exc, MalformedEventError) else logging.WARNING
        log.log(
            level,
            "outbox relay failed; retrying",
            extra={"fields": {**_error_fields(exc), "retry_in_s": delay}},
            # stack frames only for the unexpected; the formatter logs no message
            exc_info=not isinstance(exc, grpc.aio.AioRpcError | MalformedEventError),
        )
        return delay

    async def _run(self) -> None:
        while True:
            try:
                published = await self.relay_once()
            except Exception as exc:  # any failure: rolled back; back off and retry
                await asyncio.sleep(self._failed(exc))
                continue
            self._backoff.reset()
            if published < self._batch_size:
                await asyncio.sleep(self._idle_poll_s)
