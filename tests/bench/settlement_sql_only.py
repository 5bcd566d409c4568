"""The settlement benchmark's database floor: a batch's own statements (lock, read under the
locks, the one write) sent straight from the benchmark to the same tables, with columns from a
template instead of decided payments. No gRPC, no service, no rules: the gap between this
load and SettlePayments is what the service adds to its database (issue 14)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from itertools import count

import asyncpg

from services.points.domain import earning as earn
from services.points.domain.ledger import MEMBER_PENDING, LotState
from services.points.domain.rules import RulesInForce
from services.points.domain.settlement import (
    Credit,
    Payment,
    PointsState,
    SettlementResult,
    SettlementRow,
)
from services.points.domain.settlement_batch import BatchWrite
from services.points.domain.settlement_explanation import explanation_json
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE
from services.points.store import settlement_batch as store

POINTS = 12  # every template item earns this many pending points


class Template:
    """One settlement's columns, made once; each item differs only in member, key and ids."""

    def __init__(self, when: datetime) -> None:
        rules = RulesInForce(1, load_rules_file(DEFAULT_RULES_FILE))
        payment = Payment("m", "p", "CNY", 12_345, "merchant-1", "dining", when, "app")
        earning = earn.compute_earning(rules.rules, "CNY", 12_345, "dining", 10_000, 0)
        self.explanation = explanation_json(payment, earning, earn.explain(earning), 0)
        self.when = when
        self.day = earn.local_day(rules.rules, when)
        self.available_at = when + timedelta(days=7)
        self.expires_at = earn.expires_at(rules.rules, when)
        self.window = (self.day - timedelta(days=365), self.day)

    def add(self, write: BatchWrite, member_id: str, key: str, ids: list[int]) -> None:
        txn_id, lot_id, transfer_id = ids
        result = SettlementResult(
            member_id, key, POINTS, PointsState.PENDING, self.available_at, self.expires_at,
            10_000, 1, txn_id,
        )  # fmt: skip
        row = SettlementRow(txn_id, key, b"\x00" * 32, 1, POINTS, result, self.explanation)
        credit = Credit(
            lot_id, transfer_id, LotState.PENDING, MEMBER_PENDING, self.when,
            self.available_at, self.expires_at, self.day,
        )  # fmt: skip
        write.add(member_id, row, credit)


def sql_only(pool: asyncpg.Pool, members: int, batch: int) -> Callable[[], Awaitable[int]]:
    """A call settling `batch` template items of distinct members in one transaction."""
    template = Template(datetime.now(UTC) - timedelta(hours=1))
    numbers = count()

    async def call() -> int:
        first = next(numbers) * batch
        member_ids = sorted({f"mbench{(first + i) % members:07d}" for i in range(batch)})
        keys = [f"payment:sql-{first + i}" for i in range(len(member_ids))]
        async with pool.acquire() as conn, conn.transaction():
            await store.lock_known_members(conn, member_ids, 0)
            seen = await store.read_locked(
                conn,
                member_ids,
                keys=list(zip(member_ids, keys, strict=True)),
                member_days=[(m, template.day) for m in member_ids],
                window=template.window,
                id_count=3 * len(member_ids),
            )
            write = BatchWrite()
            for i, (member_id, key) in enumerate(zip(member_ids, keys, strict=True)):
                template.add(write, member_id, key, seen.ids[3 * i : 3 * i + 3])
            await store.write_batch(conn, write)
        return len(member_ids)

    return call
