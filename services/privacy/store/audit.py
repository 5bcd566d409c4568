"""SQL of the audit log (migration 001): appends, in the transaction of the change each
records, listing events, and the snapshot a chain check walks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg

from services.privacy.domain.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditFilter,
    StoredEntry,
    entry_hash,
)
from services.runtime.db import Conn

# serialises appends to the audit chain (namespace "memb", key "audit")
AUDIT_LOCK = (0x6D656D62, 0x61756474)
# a whole-chain check of millions of entries takes minutes; each batch is one statement, but
# the snapshot lives as long as the walk (as points' Reconcile, 15 minutes)
VERIFY_STATEMENT_TIMEOUT_S = 900

MAX_SEQ = 2**63 - 1  # bigint

_COLUMNS = (
    "seq, occurred_at, actor, actor_role, on_behalf_of, action, subject_id, fields, purpose,"
    " request_id, prev_hash, entry_hash"
)


def _entry(r: asyncpg.Record) -> StoredEntry:
    return StoredEntry(
        r["seq"],
        r["occurred_at"],
        AuditEvent(
            actor=r["actor"],
            actor_role=r["actor_role"],
            action=r["action"],
            subject_id=r["subject_id"],
            fields=tuple(r["fields"]),
            purpose=r["purpose"],
            on_behalf_of=r["on_behalf_of"],
            request_id=r["request_id"],
        ),
        bytes(r["prev_hash"]),
        bytes(r["entry_hash"]),
    )


async def append_audit(conn: Conn, event: AuditEvent) -> int:
    """Appends to the hash chain; call inside the transaction of the change it records."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *AUDIT_LOCK)
    prev = await conn.fetchval("SELECT entry_hash FROM privacy.audit_log ORDER BY seq DESC LIMIT 1")
    prev_hash = bytes(prev) if prev is not None else GENESIS_HASH
    occurred_at = datetime.now(UTC)
    seq = await conn.fetchval(
        "INSERT INTO privacy.audit_log (occurred_at, actor, actor_role, on_behalf_of, action,"
        " subject_id, fields, purpose, request_id, prev_hash, entry_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING seq",
        occurred_at,
        event.actor,
        event.actor_role,
        event.on_behalf_of,
        event.action,
        event.subject_id,
        list(event.fields),
        event.purpose,
        event.request_id,
        prev_hash,
        entry_hash(prev_hash, occurred_at, event),
    )
    return int(seq)


async def read_audit(
    conn: Conn, after_seq: int, limit: int, subject_id: str = ""
) -> list[StoredEntry]:
    """Entries after a seq, in seq order (of one subject, if given)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.audit_log WHERE seq > $1"
        " AND ($3 = '' OR subject_id = $3) ORDER BY seq LIMIT $2",
        after_seq,
        limit,
        subject_id,
    )
    return [_entry(r) for r in rows]


async def list_events(
    conn: Conn, where: AuditFilter, after_seq: int, limit: int
) -> list[StoredEntry]:
    """Matching events after a seq, oldest first. starts_with, not LIKE: `_` in an action
    would be a LIKE wildcard."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.audit_log WHERE seq > $1"
        " AND ($2 = '' OR subject_id = $2)"
        " AND ($3 = '' OR (CASE WHEN $4 THEN starts_with(action, $3) ELSE action = $3 END))"
        " AND ($5 = '' OR actor = $5)"
        " AND ($6::timestamptz IS NULL OR occurred_at >= $6)"
        " AND ($7::timestamptz IS NULL OR occurred_at < $7)"
        " ORDER BY seq LIMIT $8",
        after_seq,
        where.subject_id,
        where.action,
        where.action_is_prefix,
        where.actor,
        where.start,
        where.end,
        limit,
    )
    return [_entry(r) for r in rows]


@asynccontextmanager
async def chain_snapshot(pool: asyncpg.Pool) -> AsyncIterator[Conn]:
    """A read-only REPEATABLE READ transaction: every batch of a chain check sees the same
    snapshot, so entries appended during the walk neither show up half-way nor move the
    head it reports."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {VERIFY_STATEMENT_TIMEOUT_S * 1000}")
        yield conn


async def hash_before(conn: Conn, seq: int) -> bytes:
    """The entry_hash a chain range starting at `seq` must follow (genesis at the start)."""
    value = await conn.fetchval(
        "SELECT entry_hash FROM privacy.audit_log WHERE seq < $1 ORDER BY seq DESC LIMIT 1",
        seq,
        timeout=VERIFY_STATEMENT_TIMEOUT_S,
    )
    return GENESIS_HASH if value is None else bytes(value)


async def chain_batch(conn: Conn, after_seq: int, to_seq: int, limit: int) -> list[StoredEntry]:
    """Entries after a seq up to `to_seq` (inclusive; 0 = no bound), in seq order: keyset
    pagination on the primary key, so each batch costs the same however far the walk is.
    Both bounds are index conditions (no `OR`), so the last batch of a range stops at it."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.audit_log WHERE seq > $1 AND seq <= $2"
        " ORDER BY seq LIMIT $3",
        after_seq,
        to_seq or MAX_SEQ,
        limit,
        timeout=VERIFY_STATEMENT_TIMEOUT_S,
    )
    return [_entry(r) for r in rows]
