"""SQL of the privacy service (schema `privacy`)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.privacy.audit import GENESIS_HASH, AuditEvent, StoredEntry, entry_hash
from services.runtime.db import Conn, session_lock

# serialises appends to the audit chain (namespace "memb", key "audit")
AUDIT_LOCK = (0x6D656D62, 0x61756474)
# serialises key-encryption-key rotations (namespace "memb", key "krin")
KEY_RING_LOCK = (0x6D656D62, 0x6B72696E)


@dataclass(frozen=True)
class SubjectKeyRow:
    subject_id: str
    key_version: int
    kek_id: str | None
    wrapped_key: bytes | None
    destroyed_at: datetime | None


def _key_row(row: asyncpg.Record | None) -> SubjectKeyRow | None:
    if row is None:
        return None
    return SubjectKeyRow(
        row["subject_id"],
        row["key_version"],
        row["kek_id"],
        row["wrapped_key"],
        row["destroyed_at"],
    )


async def get_subject_key(conn: Conn, subject_id: str) -> SubjectKeyRow | None:
    row = await conn.fetchrow(
        "SELECT subject_id, key_version, kek_id, wrapped_key, destroyed_at"
        " FROM privacy.subject_keys WHERE subject_id = $1",
        subject_id,
    )
    return _key_row(row)


async def insert_subject_key(
    conn: Conn, subject_id: str, kek_id: str, wrapped_key: bytes
) -> SubjectKeyRow | None:
    """Inserts version 1 of a subject's data key; None if one already exists."""
    row = await conn.fetchrow(
        "INSERT INTO privacy.subject_keys (subject_id, key_version, kek_id, wrapped_key)"
        " VALUES ($1, 1, $2, $3) ON CONFLICT (subject_id) DO NOTHING"
        " RETURNING subject_id, key_version, kek_id, wrapped_key, destroyed_at",
        subject_id,
        kek_id,
        wrapped_key,
    )
    return _key_row(row)


async def destroy_subject_key(
    conn: Conn, subject_id: str, request_id: str, reason: str
) -> tuple[datetime, bool]:
    """Forgets the wrapped data key; for a subject without one, records a tombstone (version
    0) so that no key can be created for an erased subject later. Returns the first
    destruction's time and whether a data key existed."""
    row = await conn.fetchrow(
        "INSERT INTO privacy.subject_keys AS k (subject_id, key_version, destroyed_at,"
        " destroy_request_id, destroy_reason) VALUES ($1, 0, now(), $2, $3)"
        " ON CONFLICT (subject_id) DO UPDATE SET kek_id = NULL, wrapped_key = NULL,"
        " destroyed_at = COALESCE(k.destroyed_at, EXCLUDED.destroyed_at),"
        " destroy_request_id = COALESCE(k.destroy_request_id, EXCLUDED.destroy_request_id),"
        " destroy_reason = COALESCE(k.destroy_reason, EXCLUDED.destroy_reason)"
        " RETURNING destroyed_at, key_version",
        subject_id,
        request_id,
        reason,
    )
    if row is None:  # an upsert always returns its row
        raise RuntimeError("destroying a subject key returned no row")
    return row["destroyed_at"], row["key_version"] > 0


async def lock_keys_to_rewrap(
    conn: Conn, primary_kek_id: str, after_subject_id: str, limit: int
) -> list[SubjectKeyRow]:
    """The next data keys (in subject order, after the cursor) not wrapped by the primary;
    rows another replica is re-wrapping are skipped."""
    rows = await conn.fetch(
        "SELECT subject_id, key_version, kek_id, wrapped_key, destroyed_at"
        " FROM privacy.subject_keys WHERE kek_id IS NOT NULL AND kek_id <> $1"
        " AND subject_id > $2 ORDER BY subject_id LIMIT $3 FOR UPDATE SKIP LOCKED",
        primary_kek_id,
        after_subject_id,
        limit,
    )
    return [r for r in (_key_row(row) for row in rows) if r is not None]


async def update_wrapped_keys(
    conn: Conn, kek_id: str, rewrapped: Sequence[tuple[str, bytes]]
) -> None:
    await conn.executemany(
        "UPDATE privacy.subject_keys SET kek_id = $1, wrapped_key = $3, rewrapped_at = now()"
        " WHERE subject_id = $2 AND wrapped_key IS NOT NULL",
        [(kek_id, subject_id, wrapped) for subject_id, wrapped in rewrapped],
    )


async def count_keys_by_kek(conn: Conn) -> tuple[dict[str, int], int]:
    # tombstones (version 0) of subjects erased before they had a key are no data keys
    rows = await conn.fetch(
        "SELECT kek_id, count(*) AS n FROM privacy.subject_keys WHERE key_version > 0"
        " GROUP BY kek_id"
    )
    by_kek = {r["kek_id"]: int(r["n"]) for r in rows if r["kek_id"] is not None}
    destroyed = sum(int(r["n"]) for r in rows if r["kek_id"] is None)
    return by_kek, destroyed


def key_ring_lock(conn: Conn) -> AbstractAsyncContextManager[None]:
    """Serialises key-ring changes across replicas. A session lock, not a transaction lock:
    it must also cover the key-file write that follows the rotation record's commit."""
    return session_lock(conn, *KEY_RING_LOCK)


async def get_rotation(conn: Conn, request_id: str) -> tuple[str, str] | None:
    row = await conn.fetchrow(
        "SELECT previous_kek_id, primary_kek_id FROM privacy.key_rotations WHERE request_id = $1",
        request_id,
    )
    return None if row is None else (row["previous_kek_id"], row["primary_kek_id"])


async def insert_rotation(
    conn: Conn, request_id: str, previous_kek_id: str, primary_kek_id: str
) -> None:
    await conn.execute(
        "INSERT INTO privacy.key_rotations (request_id, previous_kek_id, primary_kek_id)"
        " VALUES ($1, $2, $3)",
        request_id,
        previous_kek_id,
        primary_kek_id,
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
    rows = await conn.fetch(
        "SELECT * FROM privacy.audit_log WHERE seq > $1 AND ($3 = '' OR subject_id = $3)"
        " ORDER BY seq LIMIT $2",
        after_seq,
        limit,
        subject_id,
    )
    return [
        StoredEntry(
            r["seq"],
            r["occurred_at"],
            AuditEvent(
                r["actor"],
                r["actor_role"],
                r["action"],
                r["subject_id"],
                tuple(r["fields"]),
                r["purpose"],
                r["on_behalf_of"],
                r["request_id"],
            ),
            bytes(r["prev_hash"]),
            bytes(r["entry_hash"]),
        )
        for r in rows
    ]
