"""SQL of spending: holds, the lots they took, and the lots a spend takes from.

Lock order (the one of every path that changes a member's points): the balance row
(store/balance.lock_balance), then the hold row, then lots FOR UPDATE in spending order
(expires_at, lot_id).
"""

from __future__ import annotations

from datetime import datetime

from services.points.domain.ledger import LotState
from services.points.domain.spending import (
    HeldLot,
    HoldKey,
    HoldRow,
    HoldState,
    LotPoints,
    SpendableLot,
)
from services.runtime.db import Conn


async def lock_spendable_lots(conn: Conn, member_id: str, now: datetime) -> list[SpendableLot]:
    """Lots a spend may take from, locked in spending order. A lot is usable while
    `now < expires_at`, even if the expiry job has not marked it yet."""
    rows = await conn.fetch(
        "SELECT lot_id, remaining, expires_at FROM points.lots"
        " WHERE member_id = $1 AND state = 'AVAILABLE' AND remaining > 0 AND expires_at > $2"
        " ORDER BY expires_at, lot_id FOR UPDATE",
        member_id,
        now,
    )
    return [SpendableLot(int(r["lot_id"]), int(r["remaining"]), r["expires_at"]) for r in rows]


async def change_lots(conn: Conn, member_id: str, changes: LotPoints) -> None:
    """Adds `points` (negative: takes) to each lot's remaining; the lots' CHECKs guard it."""
    if not changes:
        return
    await conn.execute(
        "UPDATE points.lots l SET remaining = l.remaining + c.points"
        " FROM unnest($2::bigint[], $3::bigint[]) AS c(lot_id, points)"
        " WHERE l.member_id = $1 AND l.lot_id = c.lot_id",
        member_id,
        [c.lot_id for c in changes],
        [c.points for c in changes],
    )


async def add_to_balance(conn: Conn, member_id: str, *, available: int, held: int) -> None:
    await conn.execute(
        "UPDATE points.balances SET available = available + $2, held = held + $3,"
        " updated_at = now() WHERE member_id = $1",
        member_id,
        available,
        held,
    )


async def insert_hold(conn: Conn, hold: HoldRow, created_at: datetime, taken: LotPoints) -> None:
    await conn.execute(
        "INSERT INTO points.holds (member_id, hold_id, state, points, expires_at,"
        " rule_version, hold_txn_id, last_txn_id, created_at)"
        " VALUES ($1, $2, 'HELD', $3, $4, $5, $6, $6, $7)",
        hold.member_id,
        hold.hold_id,
        hold.points,
        hold.expires_at,
        hold.rule_version,
        hold.last_txn_id,
        created_at,
    )
    await conn.execute(
        "INSERT INTO points.hold_lots (member_id, hold_id, lot_id, points)"
        " SELECT $1, $2, * FROM unnest($3::bigint[], $4::bigint[])",
        hold.member_id,
        hold.hold_id,
        [t.lot_id for t in taken],
        [t.points for t in taken],
    )


async def lock_hold(conn: Conn, member_id: str, hold_id: str) -> HoldRow | None:
    row = await conn.fetchrow(
        "SELECT state, points, captured_points, expires_at, rule_version, last_txn_id,"
        " clawed_back_points FROM points.holds WHERE member_id = $1 AND hold_id = $2 FOR UPDATE",
        member_id,
        hold_id,
    )
    if row is None:
        return None
    return HoldRow(
        member_id,
        hold_id,
        HoldState(row["state"]),
        int(row["points"]),
        int(row["captured_points"]),
        row["expires_at"],
        int(row["rule_version"]),
        int(row["last_txn_id"]),
        int(row["clawed_back_points"]),
    )


async def lock_held_lots(conn: Conn, member_id: str, hold_id: str) -> list[HeldLot]:
    """The hold's lots, locked in spending order (after the balance and hold rows)."""
    rows = await conn.fetch(
        "SELECT l.lot_id, h.points, l.state, l.expires_at"
        " FROM points.hold_lots h JOIN points.lots l USING (member_id, lot_id)"
        " WHERE h.member_id = $1 AND h.hold_id = $2"
        " ORDER BY l.expires_at, l.lot_id FOR UPDATE OF l",
        member_id,
        hold_id,
    )
    return [
        HeldLot(int(r["lot_id"]), int(r["points"]), LotState(r["state"]), r["expires_at"])
        for r in rows
    ]


async def close_hold(
    conn: Conn, hold: HoldRow, state: HoldState, *, captured: int, txn_id: int, at: datetime
) -> None:
    await conn.execute(
        "UPDATE points.holds SET state = $3, captured_points = $4, last_txn_id = $5,"
        " closed_at = $6 WHERE member_id = $1 AND hold_id = $2",
        hold.member_id,
        hold.hold_id,
        state,
        captured,
        txn_id,
        at,
    )


async def due_holds(conn: Conn, now: datetime, limit: int) -> list[HoldKey]:
    """Candidates of the hold_expiry job; each is locked and checked again."""
    rows = await conn.fetch(
        "SELECT member_id, hold_id FROM points.holds WHERE state = 'HELD' AND expires_at <= $1"
        " ORDER BY expires_at, member_id, hold_id LIMIT $2",
        now,
        limit,
    )
    return [HoldKey(r["member_id"], r["hold_id"]) for r in rows]
