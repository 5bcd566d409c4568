"""SQL of refunds: the settled payment, what was refunded of it, its lot and the lots and
holds to claw back from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from services.points.domain.clawback import HeldPart, LotRow, Take
from services.points.domain.ledger import LotState
from services.points.domain.refunds import RefundedSoFar, SettledPayment
from services.points.domain.settlement import settlement_key
from services.runtime.db import Conn


async def find_settled_payment(
    conn: Conn, member_id: str, payment_id: str
) -> SettledPayment | None:
    # the amount is read from the settlement's stored explanation, written in the same
    # transaction as the payment's points (domain/settlement.explanation_json)
    row = await conn.fetchrow(
        "SELECT t.points, t.explanation -> 'payment' AS payment,"
        " (SELECT l.lot_id FROM points.lots l WHERE l.member_id = t.member_id"
        "  AND l.txn_id = t.txn_id) AS lot_id,"
        " (t.explanation ->> 'points_not_qualifying')::bigint AS non_qualifying"
        " FROM points.transactions t"
        " WHERE t.member_id = $1 AND t.idempotency_key = $2 AND t.kind = 'settlement'",
        member_id,
        settlement_key(payment_id),
    )
    if row is None:
        return None
    paid = json.loads(row["payment"])
    lot_id = row["lot_id"]
    return SettledPayment(
        payment_id,
        str(paid["currency"]),
        int(paid["amount_minor"]),
        int(row["points"]),
        None if lot_id is None else int(lot_id),
        datetime.fromisoformat(paid["occurred_at"]) if paid.get("occurred_at") else None,
        int(row["non_qualifying"] or 0),
    )


async def lock_refunded(conn: Conn, member_id: str, payment: SettledPayment) -> RefundedSoFar:
    """What was refunded of the payment so far; the row is created on the first refund and
    locked (after the member's balance row) until the transaction ends."""
    await conn.execute(
        "INSERT INTO points.payment_refunds (member_id, payment_id, currency, payment_minor)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (member_id, payment_id) DO NOTHING",
        member_id,
        payment.payment_id,
        payment.currency,
        payment.amount_minor,
    )
    row = await conn.fetchrow(
        "SELECT refunded_minor, points_clawed_back FROM points.payment_refunds"
        " WHERE member_id = $1 AND payment_id = $2 FOR UPDATE",
        member_id,
        payment.payment_id,
    )
    if row is None:
        raise LookupError("payment_refunds row vanished after its insert")
    return RefundedSoFar(int(row["refunded_minor"]), int(row["points_clawed_back"]))


async def add_refunded(
    conn: Conn, member_id: str, payment_id: str, *, amount_minor: int, points: int
) -> None:
    await conn.execute(
        "UPDATE points.payment_refunds SET refunded_minor = refunded_minor + $3,"
        " points_clawed_back = points_clawed_back + $4, updated_at = now()"
        " WHERE member_id = $1 AND payment_id = $2",
        member_id,
        payment_id,
        amount_minor,
        points,
    )


async def lock_lots(conn: Conn, member_id: str, own_lot_id: int | None) -> list[LotRow]:
    """The payment's own lot and every lot with available points, locked in spending order
    (expires_at, lot_id): the one order every path locks lots in."""
    rows = await conn.fetch(
        "SELECT lot_id, state, remaining, expires_at FROM points.lots"
        " WHERE member_id = $1 AND (lot_id = $2 OR (state = 'AVAILABLE' AND remaining > 0))"
        " ORDER BY expires_at, lot_id FOR UPDATE",
        member_id,
        own_lot_id,
    )
    return [
        LotRow(int(r["lot_id"]), LotState(r["state"]), int(r["remaining"]), r["expires_at"])
        for r in rows
    ]


async def lock_held_parts(conn: Conn, member_id: str) -> list[HeldPart]:
    """What the member's open holds hold, per lot, in the lots' spending order then by hold
    id (byte order, as Python sorts); the holds are locked (after the member's balance row
    and lots, like every path)."""
    rows = await conn.fetch(
        "SELECT hl.hold_id, hl.lot_id, hl.points FROM points.hold_lots hl"
        " JOIN points.holds h USING (member_id, hold_id)"
        " JOIN points.lots l USING (member_id, lot_id)"
        " WHERE hl.member_id = $1 AND h.state = 'HELD'"
        ' ORDER BY l.expires_at, l.lot_id, hl.hold_id COLLATE "C" FOR UPDATE OF h, hl',
        member_id,
    )
    return [HeldPart(r["hold_id"], int(r["lot_id"]), int(r["points"])) for r in rows]


async def take_from_holds(
    conn: Conn, member_id: str, takes: Sequence[Take], txn_id: int, at: datetime
) -> None:
    """Lowers what each hold holds of each lot; a hold left with nothing is CLAWED_BACK."""
    holds = [t.hold_id for t in takes]
    lots = [t.lot_id for t in takes]
    points = [t.points for t in takes]
    taken = "unnest($2::text[], $3::bigint[], $4::bigint[]) AS t(hold_id, lot_id, points)"
    match = "hl.member_id = $1 AND hl.hold_id = t.hold_id AND hl.lot_id = t.lot_id"
    # parts taken whole go first: a part never holds 0 points (CHECK)
    await conn.execute(
        f"DELETE FROM points.hold_lots hl USING {taken} WHERE {match} AND hl.points = t.points",
        member_id,
        holds,
        lots,
        points,
    )
    await conn.execute(
        f"UPDATE points.hold_lots hl SET points = hl.points - t.points FROM {taken} WHERE {match}",
        member_id,
        holds,
        lots,
        points,
    )
    await conn.execute(
        "UPDATE points.holds h SET points = h.points - t.points,"
        " clawed_back_points = h.clawed_back_points + t.points, last_txn_id = $3,"
        " state = CASE WHEN h.points = t.points THEN 'CLAWED_BACK' ELSE h.state END,"
        " closed_at = CASE WHEN h.points = t.points THEN $4 ELSE h.closed_at END"
        " FROM (SELECT hold_id, sum(points) AS points"
        "  FROM unnest($2::text[], $5::bigint[]) AS u(hold_id, points) GROUP BY hold_id) t"
        " WHERE h.member_id = $1 AND h.hold_id = t.hold_id",
        member_id,
        holds,
        txn_id,
        at,
        points,
    )


async def sync_floor(conn: Conn, member_id: str, floor: int) -> None:
    """Moves the row's floor to the rules in force, never above the current balance (the
    CHECK must keep holding for a member already below a floor that was since raised)."""
    await conn.execute(
        "UPDATE points.balances SET available_floor = LEAST($2::bigint, available, 0)"
        " WHERE member_id = $1",
        member_id,
        floor,
    )
