"""ExportMemberLedger: everything points holds about one member, for the privacy service's
access and portability requests. Bounded: at most MAX_PAGE transactions per call, each page
with the lots and holds its transactions made; balance, tier and restriction on every page,
reward redemptions (one row per sku) on the first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby

import asyncpg

from services.points.store import ledger as ledger_store
from services.points.store import ledger_export as store
from services.points.store import restrictions as restriction_store
from services.points.store import tiers as tier_store
from services.points.store import transactions as txn_store
from services.points.transactions import Entry, reference_of
from services.runtime import paging
from services.runtime.errors import bad_field, not_found

MAX_PAGE = 10_000


@dataclass(frozen=True)
class ExportPage:
    member_id: str
    balance: ledger_store.BalanceRow
    tier: tier_store.TierState | None
    entries: list[tuple[Entry, str]]  # each transaction and its explanation's sentence
    lots: list[store.LotRow]
    holds: list[store.HoldRow]
    redemptions: list[store.RedemptionRow]
    restriction: restriction_store.RestrictionRow | None
    next_page_token: str


def page_size(requested: int) -> int:
    if requested < 0:
        raise bad_field("page_size", "must not be negative")
    return MAX_PAGE if requested == 0 else min(requested, MAX_PAGE)


def _position(member_id: str, token: str) -> tuple[datetime, int] | None:
    position = paging.decode_token(token, {"export": member_id})
    if position is None:
        return None
    try:
        return datetime.fromisoformat(str(position["t"])), int(position["i"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_field("page_token", "not a page token of this export") from exc


class LedgerExport:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def export(self, member_id: str, size: int, token: str) -> ExportPage:
        """One consistent snapshot (a repeatable-read transaction) per page."""
        after = _position(member_id, token)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if not await txn_store.member_exists(conn, member_id):
                raise not_found("member")
            window = txn_store.Window((), None, None, after)
            rows = await txn_store.list_transactions(conn, member_id, window, size + 1)
            page = rows[:size]
            ids = [r.txn_id for r in page]
            transfers = await txn_store.transfers_of(conn, member_id, ids)
            balance = await ledger_store.get_balance(conn, member_id, datetime.now(UTC))
            tiers = await tier_store.tier_rows(conn, [member_id])
            lots = await store.lots_of(conn, member_id, ids)
            holds = await store.holds_of(conn, member_id, ids)
            redemptions = [] if after else await store.redemptions_of(conn, member_id)
            restriction = await restriction_store.get_restriction(conn, member_id)
        # grouped once: a page holds up to 10,000 transactions and their transfers
        by_txn: dict[int, tuple[txn_store.TransferRow, ...]] = {
            txn_id: tuple(group) for txn_id, group in groupby(transfers, key=lambda t: t.txn_id)
        }
        return ExportPage(
            member_id,
            balance or ledger_store.BalanceRow(0, 0, 0, 0),
            tiers.get(member_id),
            [_entry(member_id, row, by_txn.get(row.txn_id, ())) for row in page],
            lots,
            holds,
            redemptions,
            restriction,
            _next_token(member_id, rows, size),
        )


def _entry(
    member_id: str, row: txn_store.TransactionRow, mine: tuple[txn_store.TransferRow, ...]
) -> tuple[Entry, str]:
    entry = Entry(member_id, row, reference_of(row.idempotency_key), mine)
    return entry, str(row.explanation.get("sentence", ""))


def _next_token(member_id: str, rows: list[txn_store.TransactionRow], size: int) -> str:
    if len(rows) <= size:
        return ""
    last = rows[size - 1]
    position = {"t": last.created_at.isoformat(), "i": last.txn_id}
    return paging.encode_token(position, {"export": member_id})
