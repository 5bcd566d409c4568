"""SQL of the member ids points refused because accounts had not told it of them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.points.domain.unknown_members import UnknownCounts
from services.runtime.db import Conn


async def record_refusals(
    conn: Conn, member_ids: Sequence[str], now: datetime
) -> dict[str, datetime]:
    """Counts one refusal per member id; returns when each was first refused. Members that
    arrived meanwhile are left out (their write can be retried at once)."""
    rows = await conn.fetch(
        "INSERT INTO points.unknown_members AS u (member_id, first_seen_at, last_seen_at)"
        " SELECT m, $2, $2 FROM unnest($1::text[]) AS m"
        " WHERE NOT EXISTS (SELECT 1 FROM points.members k WHERE k.member_id = m) ORDER BY 1"
        " ON CONFLICT (member_id) DO UPDATE SET refusals = u.refusals + 1,"
        " last_seen_at = GREATEST(u.last_seen_at, EXCLUDED.last_seen_at)"
        " RETURNING member_id, first_seen_at",
        sorted(set(member_ids)),
        now,
    )
    return {r["member_id"]: r["first_seen_at"] for r in rows}


async def mark_given_up(conn: Conn, member_ids: Sequence[str], now: datetime) -> list[str]:
    """The ids among these whose first final refusal this is."""
    rows = await conn.fetch(
        "UPDATE points.unknown_members SET given_up_at = $2"
        " WHERE member_id = ANY($1::text[]) AND given_up_at IS NULL RETURNING member_id",
        sorted(set(member_ids)),
        now,
    )
    return sorted(r["member_id"] for r in rows)


async def forget(conn: Conn, member_ids: Sequence[str]) -> None:
    """The members arrived: their refusals are history."""
    await conn.execute(
        "DELETE FROM points.unknown_members WHERE member_id = ANY($1::text[])",
        sorted(set(member_ids)),
    )


async def purge(conn: Conn, last_refused_before: datetime, limit: int) -> int:
    """Drops ids not asked about since `last_refused_before`, and any that arrived after a
    refusal raced their arrival; at most `limit`."""
    deleted = await conn.fetch(
        "DELETE FROM points.unknown_members WHERE member_id IN ("
        " SELECT u.member_id FROM points.unknown_members u"
        " WHERE u.last_seen_at < $1"
        " OR EXISTS (SELECT 1 FROM points.members m WHERE m.member_id = u.member_id)"
        " ORDER BY u.member_id LIMIT $2) RETURNING member_id",
        last_refused_before,
        limit,
    )
    return len(deleted)


async def counts(conn: Conn) -> UnknownCounts:
    """Over ids points still does not know: still retried, and given up."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE given_up_at IS NULL) AS waiting,"
        " count(*) FILTER (WHERE given_up_at IS NOT NULL) AS given_up"
        " FROM points.unknown_members u"
        " WHERE NOT EXISTS (SELECT 1 FROM points.members m WHERE m.member_id = u.member_id)"
    )
    return UnknownCounts(int(row["waiting"]), int(row["given_up"])) if row else UnknownCounts(0, 0)
