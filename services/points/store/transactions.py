"""SQL of a member's ledger history: transactions newest first, their transfers, one by id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.points.domain.transactions import TransactionRow, TransferRow, Window
from services.runtime.db import Conn

_COLUMNS = "txn_id, kind, idempotency_key, rule_version, points, created_at, explanation"


def _row(r: Any) -> TransactionRow:
    return TransactionRow(
        int(r["txn_id"]),
        r["kind"],
        r["idempotency_key"],
        int(r["rule_version"]),
        int(r["points"]),
        r["created_at"],
        dict(json.loads(r["explanation"])),
    )


async def list_transactions(
    conn: Conn, member_id: str, window: Window, limit: int
) -> list[TransactionRow]:
    after_at, after_id = window.after if window.after else (None, None)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM points.transactions WHERE member_id = $1"
        " AND (cardinality($2::text[]) = 0 OR kind = ANY($2::text[]))"
        " AND ($3::timestamptz IS NULL OR created_at >= $3)"
        " AND ($4::timestamptz IS NULL OR created_at < $4)"
        " AND ($5::timestamptz IS NULL OR (created_at, txn_id) < ($5, $6::bigint))"
        " ORDER BY created_at DESC, txn_id DESC LIMIT $7",
        member_id,
        list(window.kinds),
        window.start,
        window.end,
        after_at,
        after_id,
        limit,
    )
    return [_row(r) for r in rows]


async def get_transaction(conn: Conn, member_id: str, txn_id: int) -> TransactionRow | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM points.transactions WHERE member_id = $1 AND txn_id = $2",
        member_id,
        txn_id,
    )
    return None if row is None else _row(row)


async def transfers_of(conn: Conn, member_id: str, txn_ids: Sequence[int]) -> list[TransferRow]:
    if not txn_ids:
        return []
    rows = await conn.fetch(
        "SELECT txn_id, from_account, to_account, amount, lot_id, rule_version"
        " FROM points.transfers WHERE member_id = $1 AND txn_id = ANY($2::bigint[])"
        " ORDER BY txn_id, transfer_id",
        member_id,
        list(txn_ids),
    )
    return [
        TransferRow(
            int(r["txn_id"]),
            r["from_account"],
            r["to_account"],
            int(r["amount"]),
            None if r["lot_id"] is None else int(r["lot_id"]),
            int(r["rule_version"]),
        )
        for r in rows
    ]
