"""Processing pauses: privacy pushes them (a withdrawn `payment_records` consent, a
restriction request) and settlement refuses a paused member's payments, reading the pause
with the member it already locks and reads, so the settlement path never calls privacy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.points.store import processing as store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import DomainError, failed_precondition

CAUSES = ("CONSENT_WITHDRAWN", "RESTRICTION_REQUESTED")


@dataclass(frozen=True)
class ProcessingEvent:
    event_id: int  # increases per member (privacy's outbox order)
    member_id: str
    cause: str  # one of CAUSES
    paused: bool
    event_time: datetime


def processing_restricted() -> DomainError:
    return failed_precondition(
        "PROCESSING_RESTRICTED",
        "the member has withdrawn consent to, or restricted, the processing of payment records",
    )


class ProcessingPauses:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def apply(self, events: Sequence[ProcessingEvent]) -> tuple[int, int]:
        """Applies the events in order, each once (redeliveries and stale events are
        skipped); returns (applied, skipped)."""

        async def work(conn: Conn) -> int:
            applied = 0
            for e in events:
                event = (e.event_id, e.event_time)
                applied += await store.apply_pause(conn, e.member_id, e.cause, e.paused, event)
            return applied

        applied = await in_transaction(self._pool, work)
        return applied, len(events) - applied
