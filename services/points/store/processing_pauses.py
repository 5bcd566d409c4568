"""SQL of processing pauses (migration 009): privacy pauses settling a member's payments."""

from __future__ import annotations

from services.points.domain.processing_pauses import ProcessingEvent
from services.runtime.db import Conn

# a member whose payments may not be settled now (any cause), as an SQL expression of `m`
PAUSED = (
    "EXISTS (SELECT 1 FROM points.processing_pauses pp"
    " WHERE pp.member_id = m.member_id AND pp.paused)"
)


async def apply_pause(conn: Conn, event: ProcessingEvent) -> bool:
    """Records the pause of one cause unless a newer event already did; True if applied."""
    row = await conn.fetchrow(
        "INSERT INTO points.processing_pauses"
        " (member_id, cause, paused, last_event_id, changed_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (member_id, cause) DO UPDATE SET paused = EXCLUDED.paused,"
        "  last_event_id = EXCLUDED.last_event_id, changed_at = EXCLUDED.changed_at"
        " WHERE points.processing_pauses.last_event_id < EXCLUDED.last_event_id"
        " RETURNING 1",
        event.member_id,
        event.cause,
        event.paused,
        event.event_id,
        event.event_time,
    )
    return row is not None
