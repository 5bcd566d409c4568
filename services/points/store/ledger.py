"""SQL of the points ledger every topic writes: ids, transactions, transfers, lots, daily
earnings (the balances and their lock: store/balance.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date

from services.points.domain.ledger import (
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
