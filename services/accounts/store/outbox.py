"""SQL of the transactional outbox (accounts.outbox): events written with the change they
tell of, read and marked by the relay to points."""

from __future__ import annotations

import json
from collections.abc import Sequence

from services.accounts.domain.events import NewEvent, OutboxEvent
from services.runtime.db import Conn

# The relay reads the unpublished events in event order and marks what points accepted.
# Only the event types it knows are read: others stay for whatever relays them.

# a transaction-level advisory lock: one relay at a time across replicas (released with the
# transaction, so a relay that dies cannot hold it)
OUTBOX_LOCK = (0x6F757462, 1)  # "outb", the points relay


async def add_outbox_event(conn: Conn, event: NewEvent) -> None:
    await conn.execute(
        "INSERT INTO accounts.outbox (member_id, event_type, payload) VALUES ($1, $2, $3)",
        event.member_id,
        event.event_type.value,
        json.dumps(dict(event.payload)),
    )


async def try_lock_outbox(conn: Conn) -> bool:
    """Takes the relay's lock for the current transaction; False if another relay has it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", *OUTBOX_LOCK))


async def unpublished_events(
    conn: Conn, event_types: Sequence[str], limit: int
) -> list[OutboxEvent]:
    rows = await conn.fetch(
        "SELECT event_id, member_id, event_type, payload, created_at FROM accounts.outbox"
        " WHERE published_at IS NULL AND event_type = ANY($1::text[])"
        " ORDER BY event_id LIMIT $2",
        [str(t) for t in event_types],
        limit,
    )
    return [
        OutboxEvent(
            event_id=r["event_id"],
            member_id=r["member_id"],
            event_type=r["event_type"],
            payload=json.loads(r["payload"]),
            created_at=r["created_at"],
        )
        for r in rows
    ]


async def mark_published(conn: Conn, events: Sequence[OutboxEvent]) -> None:
    await conn.execute(
        "UPDATE accounts.outbox AS o SET published_at = now()"
        " FROM unnest($1::text[], $2::bigint[]) AS p(member_id, event_id)"
        " WHERE o.member_id = p.member_id AND o.event_id = p.event_id",
        [e.member_id for e in events],
        [e.event_id for e in events],
    )
