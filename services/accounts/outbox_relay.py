"""The accounts outbox's relay: delivers member events to points, at least once. The loop,
lock, backoff and logging are the runtime's (runtime/outbox_relay.py); this module says which
events and where they go (the MemberEventsPort: ports_points.py turns them into points'
MemberEvents and sends them).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.accounts.domain.events import EventType, OutboxEvent
from services.accounts.ports import MemberEventsPort
from services.accounts.store import outbox
from services.runtime import outbox_relay as relay
from services.runtime.db import Conn
from services.runtime.outbox_relay import Backoff, MalformedEventError

__all__ = ["Backoff", "MalformedEventError", "MemberEventsOutbox", "OutboxRelay"]

BATCH_SIZE = 500  # ApplyMemberEvents takes at most 500 events
EVENT_TYPES = tuple(EventType)


class MemberEventsOutbox:
    """accounts.outbox, as its relay takes, delivers and marks it."""

    def __init__(self, publisher: MemberEventsPort) -> None:
        self._publisher = publisher

    async def take(self, conn: Conn, limit: int) -> Sequence[OutboxEvent] | None:
        if not await outbox.try_lock_outbox(conn):
            return None
        return await outbox.unpublished_events(conn, EVENT_TYPES, limit)

    async def deliver(self, events: Sequence[OutboxEvent]) -> None:
        await self._publisher.publish(events)

    async def mark(self, conn: Conn, events: Sequence[OutboxEvent]) -> None:
        await outbox.mark_published(conn, events)

    def last_event_id(self, events: Sequence[OutboxEvent]) -> int:
        return events[-1].event_id


class OutboxRelay(relay.OutboxRelay[OutboxEvent]):
    """The relay of accounts' member events to points."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: MemberEventsPort,
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
