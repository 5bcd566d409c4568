"""Reconcile: the invariants of the points ledger (docs/design.md §6; what each means is
domain/reconcile.py's), each one set-based query (store/reconcile.py), run together in one
read-only REPEATABLE READ transaction: every query sees the same snapshot, so a settlement
committing in the middle of a check cannot show up as a false mismatch."""

from __future__ import annotations

import asyncpg

from services.points.domain.reconcile import (
    KNOWN_ACCOUNTS,
    MAX_VIOLATIONS,
    POINTS_MEANING,
    Invariant,
    Report,
    Violation,
)
from services.points.store import reconcile as reconcile_store
from services.runtime.db import Conn


def _checks() -> dict[Invariant, reconcile_store.Check]:
    """One query per invariant; each returns at most `limit` rows and the full count."""
    return {
        Invariant.TRANSFER_INVALID: reconcile_store.invalid_transfers,
        Invariant.TRANSFER_ORPHAN: lambda conn, member, limit: reconcile_store.orphans(
            conn, member, limit, POINTS_MEANING
        ),
        Invariant.UNKNOWN_RULE_VERSION: reconcile_store.unknown_rule_versions,
        Invariant.BALANCE_MISMATCH: reconcile_store.balance_mismatches,
        Invariant.LOTS_MISMATCH: reconcile_store.lots_mismatches,
        Invariant.LOT_OVERDRAWN: reconcile_store.overdrawn_lots,
        Invariant.BELOW_FLOOR: reconcile_store.below_floor,
        Invariant.DUPLICATE_KEY: reconcile_store.duplicate_keys,
        Invariant.PROGRAM_TOTAL: lambda conn, member, limit: reconcile_store.books_not_closing(
            conn, member, limit, KNOWN_ACCOUNTS
        ),
    }


async def check(conn: Conn, member_id: str | None) -> Report:
    """Every invariant, inside the caller's (snapshot) transaction."""
    found: list[Violation] = []
    total = 0
    for invariant, run in _checks().items():
        rows, count = await run(conn, member_id, MAX_VIOLATIONS - len(found))
        found.extend(Violation(invariant, r.member_id, r.detail) for r in rows)
        total += count
    counts = await reconcile_store.counts(conn, member_id)
    return Report(counts, tuple(found[:MAX_VIOLATIONS]), total)


class Reconciler:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def reconcile(self, member_id: str | None) -> Report:
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await reconcile_store.allow_long_statements(conn)
            return await check(conn, member_id)
