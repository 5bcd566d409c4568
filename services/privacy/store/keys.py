"""SQL of subject data keys and key-ring rotations (migration 001)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import asyncpg

from services.privacy.domain.field_crypto import (
    Destruction,
    KeyCounts,
    Rewrapped,
    Rotation,
    SubjectKey,
)
from services.runtime.db import Conn, session_lock

# serialises key-encryption-key rotations (namespace "memb", key "krin")
KEY_RING_LOCK = (0x6D656D62, 0x6B72696E)


def _key_row(row: asyncpg.Record | None) -> SubjectKey | None:
    if row is None:
        return None
    return SubjectKey(
        row["subject_id"],
        row["key_version"],
        row["kek_id"],
        row["wrapped_key"],
        row["destroyed_at"],
    )


async def get_subject_key(conn: Conn, subject_id: str) -> SubjectKey | None:
    row = await conn.fetchrow(
        "SELECT subject_id, key_version, kek_id, wrapped_key, destroyed_at"
        " FROM privacy.subject_keys WHERE subject_id = $1",
        subject_id,
    )
    return _key_row(row)


async def insert_subject_key(
    conn: Conn, subject_id: str, *, kek_id: str, wrapped_key: bytes
) -> SubjectKey | None:
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
    conn: Conn, subject_id: str, *, request_id: str, reason: str
) -> Destruction:
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
    return Destruction(row["destroyed_at"], row["key_version"] > 0)


async def lock_keys_to_rewrap(
    conn: Conn, *, primary_kek_id: str, after_subject_id: str, limit: int
) -> list[SubjectKey]:
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


async def update_wrapped_keys(conn: Conn, kek_id: str, rewrapped: Sequence[Rewrapped]) -> None:
    await conn.executemany(
        "UPDATE privacy.subject_keys SET kek_id = $1, wrapped_key = $3, rewrapped_at = now()"
        " WHERE subject_id = $2 AND wrapped_key IS NOT NULL",
        [(kek_id, subject_id, wrapped) for subject_id, wrapped in rewrapped],
    )


async def count_keys_by_kek(conn: Conn) -> KeyCounts:
    # tombstones (version 0) of subjects erased before they had a key are no data keys
    rows = await conn.fetch(
        "SELECT kek_id, count(*) AS n FROM privacy.subject_keys WHERE key_version > 0"
        " GROUP BY kek_id"
    )
    by_kek = {r["kek_id"]: int(r["n"]) for r in rows if r["kek_id"] is not None}
    destroyed = sum(int(r["n"]) for r in rows if r["kek_id"] is None)
    return KeyCounts(by_kek, destroyed)


def key_ring_lock(conn: Conn) -> AbstractAsyncContextManager[None]:
    """Serialises key-ring changes across replicas. A session lock, not a transaction lock:
    it must also cover the key-file write that follows the rotation record's commit."""
    return session_lock(conn, *KEY_RING_LOCK)


async def get_rotation(conn: Conn, request_id: str) -> Rotation | None:
    row = await conn.fetchrow(
        "SELECT previous_kek_id, primary_kek_id FROM privacy.key_rotations WHERE request_id = $1",
        request_id,
    )
    return None if row is None else Rotation(row["previous_kek_id"], row["primary_kek_id"])


async def insert_rotation(conn: Conn, request_id: str, rotation: Rotation) -> None:
    await conn.execute(
        "INSERT INTO privacy.key_rotations (request_id, previous_kek_id, primary_kek_id)"
        " VALUES ($1, $2, $3)",
        request_id,
        rotation.previous_kek_id,
        rotation.primary_kek_id,
    )


async def live_subjects(conn: Conn, subject_ids: Sequence[str]) -> set[str]:
    """Those of the subjects whose data key exists and was not destroyed."""
    rows = await conn.fetch(
        "SELECT subject_id FROM privacy.subject_keys"
        " WHERE subject_id = ANY($1::text[]) AND destroyed_at IS NULL",
        list(subject_ids),
    )
    return {r["subject_id"] for r in rows}
