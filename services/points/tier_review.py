"""The tier review job's work on a batch of due members (jobs.review_tiers).

Each tier is reviewed under the rules version it was set under (its row records it): the
job has no rules of its own, and a tier's window, threshold and grace are the terms it was
granted on. The members' balance rows are locked first (sorted, as settlements lock them),
so a review never interleaves with a settlement or refund of the same member.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from services.points import tiers
from services.points.store import tiers as store
from services.points.store.jobs import lock_balances
from services.runtime.db import Conn


def _due(state: store.TierState, now: datetime) -> bool:
    when = state.grace_until or state.review_at
    return when is not None and when <= now


async def review_due(conn: Conn, member_ids: Sequence[str], now: datetime) -> int:
    """Reviews the members still due once locked; returns how many rows changed."""
    await lock_balances(conn, list(member_ids))
    states = {m: s for m, s in (await store.tier_rows(conn, member_ids)).items() if _due(s, now)}
    by_version: dict[int, list[str]] = defaultdict(list)
    for member_id, state in states.items():
        by_version[state.rule_version].append(member_id)
    documents = await store.rules_documents(conn, list(by_version))
    changed: dict[str, store.TierState] = {}
    for version, members in by_version.items():
        rules = tiers.rules_of(version, documents[version])
        sums = await store.window_sums(conn, members, *tiers.window_days(rules, now))
        for member_id in members:
            changed[member_id] = tiers.reviewed(rules, states[member_id], sums[member_id], now)
    if changed:
        await store.set_tiers(conn, changed)
    return len(changed)
