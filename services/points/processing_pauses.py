"""ApplyProcessingEvents: the processing pauses privacy pushes (domain/processing_pauses.py),
applied each once, in order."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.points.domain.members import EventsApplied
from services.points.domain.processing_pauses import ProcessingEvent
from services.points.store import processing_pauses as pause_store
from services.runtime.db import Conn, in_transaction


class ProcessingPauses:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply(self, events: Sequence[ProcessingEvent]) -> EventsApplied:
        """Applies the events in order, each once (redeliveries and stale events are
        skipped)."""

        async def work(conn: Conn) -> int:
            applied = 0
            for event in events:
                applied += await pause_store.apply_pause(conn, event)
            return applied

        applied = await in_transaction(self._pool, work)
        return EventsApplied(applied, len(events) - applied)
