"""A transactional outbox's relay: delivers a service's events to another, at least once.

A background loop takes a batch of unpublished events (in event order) inside a transaction
that holds the outbox's transaction-level lock, so that one relay works at a time across
replicas; it delivers them and marks the batch published in that same transaction. If the
receiver is down or refuses, the transaction rolls back, nothing is marked and the batch is
tried again after an exponential backoff. Receivers apply events idempotently and tolerate
redelivery, so a batch delivered twice (marked after the receiver applied it, but the commit
failed) does no harm.

The relay polls: every `idle_poll_s` when there is nothing to send, at once again after a
full batch. Polling rather than an in-process wake-up, because the event may be written by
another replica than the one holding the lock; it costs one indexed query per interval.

What differs per outbox (which table, which events, which RPC) is an `OutboxSource`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

import asyncpg
import grpc

from services.runtime.context import new_request_id, set_request_id
from services.runtime.db import Conn

IDLE_POLL_S = 0.5
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

E = TypeVar("E")


class MalformedEventError(ValueError):
    """An outbox event the receiver's message cannot express (a bug in the sender): the
    relay stops at it, and says which, rather than lose or reorder events."""

    def __init__(self, event_id: int) -> None:
        super().__init__(f"outbox event {event_id} is malformed")
        self.event_id = event_id


class OutboxSource(Protocol[E]):
    """One outbox: how its relay takes, delivers and marks events."""

    async def take(self, conn: Conn, limit: int) -> Sequence[E] | None:
        """Locks the outbox for this transaction (None: another relay holds it) and
        returns up to `limit` unpublished events in event order."""
        ...

    async def deliver(self, events: Sequence[E]) -> None:
        """Sends the events to the receiver; raises when it did not accept them."""
        ...

    async def mark(self, conn: Conn, events: Sequence[E]) -> None: ...

    def last_event_id(self, events: Sequence[E]) -> int: ...


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


class OutboxRelay(Generic[E]):
    def __init__(
        self,
        pool: asyncpg.Pool,
        source: OutboxSource[E],
        *,
        name: str,
        batch_size: int,
        idle_poll_s: float = IDLE_POLL_S,
        backoff: Backoff | None = None,
    ) -> None:
        self._pool = pool
        self._source = source
        self._name = name
        self._log = logging.getLogger(f"membership.{name}.relay")
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._backoff = backoff or Backoff()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(), name=f"{self._name}-outbox-relay")

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
        # one id per batch, in this task's own context: sender and receiver logs correlate
        set_request_id(new_request_id())
        async with self._pool.acquire() as conn, conn.transaction():
            events = await self._source.take(conn, self._batch_size)
            if not events:
                return 0
            await self._source.deliver(events)
            await self._source.mark(conn, events)
        self._log.info(
            "outbox events published",
            extra={
                "fields": {
                    "count": len(events),
                    "last_event_id": self._source.last_event_id(events),
                }
            },
        )
        return len(events)

    def _failed(self, exc: Exception) -> float:
        """Logs a failed delivery; the delay before the next attempt."""
        delay = self._backoff.next_delay()
        # a malformed event stops the relay until fixed: an error, not a passing outage
        level = logging.ERROR if isinstance(exc, MalformedEventError) else logging.WARNING
        self._log.log(
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
