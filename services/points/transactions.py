"""ListTransactions and ExplainTransaction: a member's ledger history, newest first, and how
each transaction came about, read from what the ledger stored with it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.points.domain.transactions import (
    Entry,
    Explanation,
    Query,
    Window,
    entry_of,
    explanation_of,
)
from services.points.restrictions import refuse_if_restricted
from services.points.store import members as member_store
from services.points.store import transactions as transaction_store
from services.runtime import paging
from services.runtime.errors import bad_field, not_found


def _filter_key(query: Query) -> dict[str, Any]:
    """What a page token is bound to: the same member and filter."""
    return {
        "m": query.member_id,
        "k": sorted(query.kinds),
        "s": query.start.isoformat() if query.start else "",
        "e": query.end.isoformat() if query.end else "",
    }


def _position(query: Query) -> tuple[datetime, int] | None:
    position = paging.decode_token(query.page_token, _filter_key(query))
    if position is None:
        return None
    try:
        return datetime.fromisoformat(str(position["t"])), int(position["i"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc


class Transactions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(self, query: Query) -> tuple[list[Entry], str]:
        """A page newest first, and the token of the next ("" at the end)."""
        size = paging.page_size(query.page_size)
        window = Window(query.kinds, query.start, query.end, _position(query))
        async with self._pool.acquire() as conn:
            if not await member_store.member_exists(conn, query.member_id):
                raise not_found("member")
            await refuse_if_restricted(conn, query.member_id)
            rows = await transaction_store.list_transactions(
                conn, query.member_id, window, size + 1
            )
            page = rows[:size]
            txn_ids = [r.txn_id for r in page]
            transfers = await transaction_store.transfers_of(conn, query.member_id, txn_ids)
        entries = [entry_of(query.member_id, row, transfers) for row in page]
        if len(rows) <= size:
            return entries, ""
        last = page[-1]
        position = {"t": last.created_at.isoformat(), "i": last.txn_id}
        return entries, paging.encode_token(position, _filter_key(query))

    async def explain(self, member_id: str, txn_id: int) -> Explanation:
        async with self._pool.acquire() as conn:
            await refuse_if_restricted(conn, member_id)
            row = await transaction_store.get_transaction(conn, member_id, txn_id)
        if row is None:  # another member's transaction is not found either
            raise not_found("transaction")
        return explanation_of(member_id, row)
