"""Tiers: GetTierProgress (a member's tier and progress under the rules in force) and the
tier review job's work on a batch of due members (how a tier moves is domain/tiers.py's).

Each tier is reviewed under the rules version it was set under (its row records it): the
job has no rules of its own, and a tier's window, threshold and grace are the terms it was
granted on. The members' balance rows are locked first (sorted, as settlements lock them),
so a review never interleaves with a settlement or refund of the same member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.points.domain import tiers
from services.points.domain.jobs import BatchResult
from services.points.domain.restrictions import require_readable
from services.points.domain.rules import RulesInForce
from services.points.domain.tiers import Progress, TierState
from services.points.members import MemberDirectory
from services.points.store import balance as balance_store
from services.points.store import program as program_store
from services.points.store import tiers as tier_store
from services.runtime.db import Conn


class Tiers:
    def __init__(
        self,
        pool: asyncpg.Pool,
        members: MemberDirectory,
        rules: RulesInForce,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._members = members
        self._rules = rules
        self._clock = clock

    async def progress(self, member_id: str) -> Progress:
        rules, now = self._rules.rules, self._clock()
        async with self._pool.acquire() as conn:
            require_readable(await self._members.state_of(conn, member_id))
            window = tiers.window_days(rules, now)
            view = (await tier_store.tier_views(conn, [member_id], *window))[member_id]
        return tiers.progress(rules, view.state, view.qualifying, now)


async def review_tiers(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """The tier_review job's batch: tiers whose review (or grace end) is due are kept and
    reviewed again a window later, given their grace period, or lowered to what the
    window's points reach."""
    due = await tier_store.due_reviews(conn, now, limit)
    if not due:
        return BatchResult(0, 0)
    return BatchResult(len(due), await _review_due(conn, due, now))


async def _review_due(conn: Conn, member_ids: list[str], now: datetime) -> int:
    """Reviews the members still due once locked; returns how many rows changed."""
    await balance_store.lock_balances(conn, member_ids)
    rows = await tier_store.tier_rows(conn, member_ids)
    states = {m: s for m, s in rows.items() if tiers.review_due(s, now)}
    by_version: dict[int, list[str]] = defaultdict(list)
    for member_id, state in states.items():
        by_version[state.rule_version].append(member_id)
    documents = await program_store.rules_documents(conn, list(by_version))
    changed: dict[str, TierState] = {}
    for version, members in by_version.items():
        rules = tiers.rules_of(version, documents[version])
        sums = await tier_store.window_sums(conn, members, *tiers.window_days(rules, now))
        for member_id in members:
            changed[member_id] = tiers.reviewed(rules, states[member_id], sums[member_id], now)
    if changed:
        await tier_store.set_tiers(conn, changed)
    return len(changed)
