"""SQL of the members' materialised balances: the lock every change of a member's points
takes, the balance as of now, its changes, a debt, and the points expiring soonest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.points.domain.balance import Balance, ExpiringPoints
from services.runtime.db import Conn


async def lock_balance(conn: Conn, member_id: str, available_floor: int) -> Balance:
    """Creates the member's balance on first use and locks it for this transaction: every
    change of one member's points is serialised here, and only here."""
    await conn.execute(
        "INSERT INTO points.balances (member_id, available_floor) VALUES ($1, $2)"
        " ON CONFLICT (member_id) DO NOTHING",
        member_id,
        available_floor,
    )
    row = await conn.fetchrow(
        "SELECT available, pending, held, lifetime_earned FROM points.balances"
        " WHERE member_id = $1 FOR UPDATE",
        member_id,
    )
    if row is None:
        raise LookupError("balance row vanished after its insert")
    return Balance(row["available"], row["pending"], row["held"], row["lifetime_earned"])


async def lock_balances(conn: Conn, member_ids: Sequence[str]) -> dict[str, int]:
    """Locks in sorted member_id order, the order settlements lock in, so a job and a
    settlement batch never wait on each other in a cycle; returns each `available`."""
    rows = await conn.fetch(
        "SELECT member_id, available FROM points.balances WHERE member_id = ANY($1::text[])"
        " ORDER BY member_id FOR UPDATE",
        sorted(set(member_ids)),
    )
    return {r["member_id"]: int(r["available"]) for r in rows}


async def get_balance(conn: Conn, member_id: str, now: datetime) -> Balance | None:
    """The balance as of `now`: points of lots already past their expiry are not counted
    as available, whether or not the expiry job has run yet."""
    row = await conn.fetchrow(
        "SELECT b.available - COALESCE((SELECT sum(l.remaining) FROM points.lots l"
        "  WHERE l.member_id = b.member_id AND l.state = 'AVAILABLE' AND l.remaining > 0"
        "  AND l.expires_at <= $2), 0)::bigint AS available,"
        " b.pending, b.held, b.lifetime_earned FROM points.balances b WHERE b.member_id = $1",
        member_id,
        now,
    )
    if row is None:
        return None
    return Balance(row["available"], row["pending"], row["held"], row["lifetime_earned"])


async def add_to_balance(
    conn: Conn,
    member_id: str,
    *,
    available: int = 0,
    pending: int = 0,
    earned: int = 0,
    held: int = 0,
) -> None:
    await conn.execute(
        "UPDATE points.balances SET available = available + $2, pending = pending + $3,"
        " lifetime_earned = lifetime_earned + $4, held = held + $5, updated_at = now()"
        " WHERE member_id = $1",
        member_id,
        available,
        pending,
        earned,
        held,
    )


async def debt_of(conn: Conn, member_id: str) -> int:
    """Points the member owes (available below zero); 0 without a balance row."""
    value = await conn.fetchval(
        "SELECT GREATEST(0, -available) FROM points.balances WHERE member_id = $1", member_id
    )
    return int(value or 0)


async def expiring_soonest(
    conn: Conn, member_id: str, limit: int, now: datetime
) -> list[ExpiringPoints]:
    """The next expiry dates after `now` (a date already past is not "expiring")."""
    rows = await conn.fetch(
        "SELECT sum(remaining) AS points, expires_at FROM points.lots"
        " WHERE member_id = $1 AND state = 'AVAILABLE' AND remaining > 0 AND expires_at > $3"
        " GROUP BY expires_at ORDER BY expires_at LIMIT $2",
        member_id,
        limit,
        now,
    )
    return [ExpiringPoints(int(r["points"]), r["expires_at"]) for r in rows]
