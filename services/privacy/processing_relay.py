"""The relay of privacy's outbox to points: processing pauses (a withdrawn or re-granted
`payment_records` consent, a RESTRICTION request), delivered at least once, so that points
refuses a paused member's payments without asking privacy on the settlement path."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.privacy.domain.processing import PauseEvent
from services.privacy.ports_processing import BATCH_SIZE, ProcessingEventsPort
from services.privacy.store import outbox as outbox_store
from services.runtime import outbox_relay as relay
from services.runtime.db import Conn


class PauseEventsOutbox:
    """privacy.outbox, as its relay takes, delivers and marks it."""

    def __init__(self, points: ProcessingEventsPort) -> None:
        self._points = points

    async def take(self, conn: Conn, limit: int) -> Sequence[PauseEvent] | None:
        if not await outbox_store.try_lock_outbox(conn):
            return None
        return await outbox_store.unpublished(conn, limit)

    async def deliver(self, events: Sequence[PauseEvent]) -> None:
        await self._points.apply(events)

    async def mark(self, conn: Conn, events: Sequence[PauseEvent]) -> None:
        await outbox_store.mark_published(conn, events)

    def last_event_id(self, events: Sequence[PauseEvent]) -> int:
        return events[-1].event_id


def pause_relay(pool: asyncpg.Pool, points: ProcessingEventsPort) -> relay.OutboxRelay[PauseEvent]:
    return relay.OutboxRelay(pool, PauseEventsOutbox(points), name="privacy", batch_size=BATCH_SIZE)
