"""SQL of restrictions of processing: the record of each and the flag on points.members."""

from __future__ import annotations

from services.points.domain.restrictions import Restriction
from services.runtime.db import Conn


async def lock_member(conn: Conn, member_id: str) -> bool:
    """Locks the member's row (False when points does not know the member)."""
    found = await conn.fetchval(
        "SELECT 1 FROM points.members WHERE member_id = $1 FOR UPDATE", member_id
    )
    return found is not None


async def get_restriction(conn: Conn, member_id: str) -> Restriction | None:
    r = await conn.fetchrow(
        "SELECT member_id, legal_basis, retention_end, request_id, request_hash, restricted_at"
        " FROM points.member_restrictions WHERE member_id = $1",
        member_id,
    )
    if r is None:
        return None
    return Restriction(
        r["member_id"],
        r["legal_basis"],
        r["retention_end"],
        r["request_id"],
        bytes(r["request_hash"]),
        r["restricted_at"],
    )


async def insert_restriction(conn: Conn, row: Restriction) -> None:
    await conn.execute(
        "INSERT INTO points.member_restrictions"
        " (member_id, legal_basis, retention_end, request_id, request_hash, restricted_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        row.member_id,
        row.legal_basis,
        row.retention_end,
        row.request_id,
        row.request_hash,
        row.restricted_at,
    )
    await conn.execute(
        "UPDATE points.members SET restricted = true, updated_at = now() WHERE member_id = $1",
        row.member_id,
    )


async def is_restricted(conn: Conn, member_id: str) -> bool:
    found = await conn.fetchval(
        "SELECT restricted FROM points.members WHERE member_id = $1", member_id
    )
    return bool(found)
