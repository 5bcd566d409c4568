"""SQL of erasures (migration 004): one row per erased member, with what the law requires to
keep of them; the erasure journal outside the database mirrors it (erasure_journal.py)."""

from __future__ import annotations

from datetime import datetime

from services.privacy.domain.erasures import JournalEntry, Retention
from services.runtime.db import Conn


async def insert_erasure(
    conn: Conn, member_id: str, retention: Retention, *, data_request_id: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO privacy.erasures"
        " (member_id, data_request_id, legal_basis, retention_end_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (member_id) DO NOTHING",
        member_id,
        data_request_id,
        retention.legal_basis,
        retention.retention_end,
        at,
    )


async def get_retention(conn: Conn, member_id: str) -> Retention | None:
    r = await conn.fetchrow(
        "SELECT legal_basis, retention_end_at FROM privacy.erasures WHERE member_id = $1",
        member_id,
    )
    return Retention(r["legal_basis"], r["retention_end_at"]) if r else None


async def all_erasures(conn: Conn) -> list[JournalEntry]:
    """Every erasure as the journal records it, oldest first."""
    rows = await conn.fetch(
        "SELECT member_id, data_request_id, created_at FROM privacy.erasures ORDER BY created_at"
    )
    return [JournalEntry(r["member_id"], r["data_request_id"], r["created_at"]) for r in rows]
