"""SQL of privacy's outbox (migration 003): processing pauses for points."""

from __future__ import annotations

from collections.abc import Sequence

from services.privacy.domain.processing import PauseCause, PauseEvent
from services.runtime.db import Conn

# one relay at a time across replicas (namespace "memb", key "pout")
OUTBOX_LOCK = (0x6D656D62, 0x706F7574)


async def enqueue_pause(conn: Conn, member_id: str, cause: PauseCause, *, paused: bool) -> None:
    """In the caller's transaction, with the change the pause follows from."""
    await conn.execute(
        "INSERT INTO privacy.outbox (member_id, cause, paused) VALUES ($1, $2, $3)",
        member_id,
        cause,
        paused,
    )


async def try_lock_outbox(conn: Conn) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", *OUTBOX_LOCK))


async def unpublished(conn: Conn, limit: int) -> list[PauseEvent]:
    rows = await conn.fetch(
        "SELECT event_id, member_id, cause, paused, created_at FROM privacy.outbox"
        " WHERE published_at IS NULL ORDER BY event_id LIMIT $1",
        limit,
    )
    return [
        PauseEvent(
            r["event_id"], r["member_id"], PauseCause(r["cause"]), r["paused"], r["created_at"]
        )
        for r in rows
    ]


async def mark_published(conn: Conn, events: Sequence[PauseEvent]) -> None:
    await conn.execute(
        "UPDATE privacy.outbox SET published_at = now() WHERE event_id = ANY($1::bigint[])",
        [e.event_id for e in events],
    )
