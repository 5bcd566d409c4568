"""ExportMemberLedger: everything points holds about one member, for the privacy service's
access and portability requests. Bounded: at most MAX_PAGE transactions per call, each page
with the lots and holds its transactions made; balance, tier and restriction on every page,
reward redemptions (one row per sku) on the first."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from itertools import groupby

import asyncpg

from services.points.domain.balance import NO_BALANCE
from services.points.domain.ledger_export import ExportPage, exported_entry
from services.points.domain.transactions import TransactionRow, TransferRow, Window
from services.points.store import balance as balance_store
from services.points.store import ledger_export as export_store
from services.points.store import members as member_store
from services.points.store import restrictions as restriction_store
from services.points.store import tiers as tier_store
from services.points.store import transactions as transaction_store
from services.runtime import paging
from services.runtime.errors import bad_field, not_found


def _position(member_id: str, token: str) -> tuple[datetime, int] | None:
    position = paging.decode_token(token, {"export": member_id})
    if position is None:
        return None
    try:
        return datetime.fromisoformat(str(position["t"])), int(position["i"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_field("page_token", "not a page token of this export") from exc


class LedgerExport:
    def __init__(
        self, pool: asyncpg.Pool, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._pool = pool
        self._clock = clock

    async def export(self, member_id: str, size: int, token: str) -> ExportPage:
        """One consistent snapshot (a repeatable-read transaction) per page."""
        after = _position(member_id, token)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            if not await member_store.member_exists(conn, member_id):
                raise not_found("member")
            window = Window((), None, None, after)
            rows = await transaction_store.list_transactions(conn, member_id, window, size + 1)
            page = rows[:size]
            ids = [r.txn_id for r in page]
            transfers = await transaction_store.transfers_of(conn, member_id, ids)
            balance = await balance_store.get_balance(conn, member_id, self._clock())
            tiers = await tier_store.tier_rows(conn, [member_id])
            lots = await export_store.lots_of(conn, member_id, ids)
            holds = await export_store.holds_of(conn, member_id, ids)
            redemptions = [] if after else await export_store.redemptions_of(conn, member_id)
            restriction = await restriction_store.get_restriction(conn, member_id)
        # grouped once: a page holds up to 10,000 transactions and their transfers
        by_txn: dict[int, tuple[TransferRow, ...]] = {
            txn_id: tuple(group) for txn_id, group in groupby(transfers, key=lambda t: t.txn_id)
        }
        return ExportPage(
            member_id,
            balance or NO_BALANCE,
            tiers.get(member_id),
            [exported_entry(member_id, row, by_txn.get(row.txn_id, ())) for row in page],
            lots,
            holds,
            redemptions,
            restriction,
            _next_token(member_id, rows, size),
        )


def _next_token(member_id: str, rows: list[TransactionRow], size: int) -> str:
    if len(rows) <= size:
        return ""
    last = rows[size - 1]
    position = {"t": last.created_at.isoformat(), "i": last.txn_id}
    return paging.encode_token(position, {"export": member_id})
