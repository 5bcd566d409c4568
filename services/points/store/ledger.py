"""SQL of the points ledger every topic writes: balances (and the lock every change of a
member's points takes), transactions, transfers, lots, daily earnings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime

from services.points.domain.ledger import (
    Balance,
    ExpiringPoints,
    NewLot,
    NewTransaction,
    NewTransfer,
    StoredTransaction,
)
from services.runtime.db import Conn


async def next_ids(conn: Conn, count: int) -> list[int]:
    """Ids for transactions, transfers and lots: one sequence, no hot row."""
    rows = await conn.fetch(
        "SELECT nextval('points.ledger_ids') AS id FROM generate_series(1, $1)", count
    )
    return [int(r["id"]) for r in rows]


async def find_transaction(conn: Conn, member_id: str, key: str) -> StoredTransaction | None:
    row = await conn.fetchrow(
        "SELECT txn_id, kind, request_hash, result FROM points.transactions"
        " WHERE member_id = $1 AND idempotency_key = $2",
        member_id,
        key,
    )
    if row is None:
        return None
    return StoredTransaction(
        int(row["txn_id"]), row["kind"], bytes(row["request_hash"]), json.loads(row["result"])
    )


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


async def earned_on(conn: Conn, member_id: str, day: date) -> int:
    value = await conn.fetchval(
        "SELECT points FROM points.daily_earnings WHERE member_id = $1 AND day = $2",
        member_id,
        day,
    )
    return int(value or 0)


async def add_earned_on(conn: Conn, member_id: str, day: date, points: int) -> None:
    await conn.execute(
        "INSERT INTO points.daily_earnings (member_id, day, points) VALUES ($1, $2, $3)"
        " ON CONFLICT (member_id, day)"
        " DO UPDATE SET points = points.daily_earnings.points + EXCLUDED.points",
        member_id,
        day,
        points,
    )


async def insert_lot(conn: Conn, member_id: str, lot: NewLot) -> None:
    await conn.execute(
        "INSERT INTO points.lots (member_id, lot_id, txn_id, state, points, remaining,"
        " earned_at, available_at, expires_at, rule_version)"
        " VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)",
        member_id,
        lot.lot_id,
        lot.txn_id,
        lot.state,
        lot.points,
        lot.earned_at,
        lot.available_at,
        lot.expires_at,
        lot.rule_version,
    )


async def insert_transfers(conn: Conn, member_id: str, transfers: Sequence[NewTransfer]) -> None:
    ids = await next_ids(conn, len(transfers))
    await conn.executemany(
        "INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
        " to_account, amount, lot_id, rule_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                member_id,
                tid,
                t.txn_id,
                t.from_account,
                t.to_account,
                t.amount,
                t.lot_id,
                t.rule_version,
            )
            for tid, t in zip(ids, transfers, strict=True)
        ],
    )


async def insert_transaction(conn: Conn, member_id: str, txn: NewTransaction) -> None:
    await conn.execute(
        "INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key,"
        " request_hash, rule_version, points, result, explanation)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        member_id,
        txn.txn_id,
        txn.kind,
        txn.idempotency_key,
        txn.request_hash,
        txn.rule_version,
        txn.points,
        json.dumps(txn.result),
        json.dumps(txn.explanation, ensure_ascii=False),
    )


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


async def lock_balances(conn: Conn, member_ids: Sequence[str]) -> dict[str, int]:
    """Locks in sorted member_id order, the order settlements lock in, so a job and a
    settlement batch never wait on each other in a cycle; returns each `available`."""
    rows = await conn.fetch(
        "SELECT member_id, available FROM points.balances WHERE member_id = ANY($1::text[])"
        " ORDER BY member_id FOR UPDATE",
        sorted(set(member_ids)),
    )
    return {r["member_id"]: int(r["available"]) for r in rows}


async def debt_of(conn: Conn, member_id: str) -> int:
    """Points the member owes (available below zero); 0 without a balance row."""
    value = await conn.fetchval(
        "SELECT GREATEST(0, -available) FROM points.balances WHERE member_id = $1", member_id
    )
    return int(value or 0)


async def take_from_lot(
    conn: Conn, member_id: str, lot_id: int, points: int, *, cancel_when_empty: bool
) -> None:
    """Lowers a lot's remaining points; a pending lot left with none is CANCELLED."""
    await conn.execute(
        "UPDATE points.lots SET remaining = remaining - $3,"
        " state = CASE WHEN $4 AND remaining - $3 = 0 THEN 'CANCELLED' ELSE state END"
        " WHERE member_id = $1 AND lot_id = $2",
        member_id,
        lot_id,
        points,
        cancel_when_empty,
    )
