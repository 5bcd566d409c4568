"""SQL of campaign budget slices and members' campaign usage (domain/campaign_budgets.py)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.points.domain.campaign_awards import BudgetKey, MemberKey
from services.points.domain.campaign_budgets import SLICES, Slice
from services.runtime.db import Conn

_NOT_EMPTY = "(points_left IS NULL OR points_left > 0) AND (awards_left IS NULL OR awards_left > 0)"


async def create_slices(conn: Conn, campaign_id: str, period: str, slices: Sequence[Slice]) -> None:
    """A budget's slices, once: a period's are cut when first needed (ON CONFLICT: another
    batch cut them first)."""
    await conn.execute(
        "INSERT INTO points.campaign_budget_slices"
        " (campaign_id, period, slice, points_left, awards_left)"
        " SELECT $1, $2, s.i, s.p, s.a FROM unnest($3::int[], $4::bigint[], $5::bigint[])"
        " AS s(i, p, a) ON CONFLICT DO NOTHING",
        campaign_id,
        period,
        [s.slice for s in slices],
        [s.points_left for s in slices],
        [s.awards_left for s in slices],
    )


async def periods_cut(conn: Conn, keys: Sequence[BudgetKey]) -> set[BudgetKey]:
    rows = await conn.fetch(
        "SELECT DISTINCT s.campaign_id, s.period FROM points.campaign_budget_slices s"
        " JOIN unnest($1::text[], $2::text[]) AS k(c, p)"
        " ON s.campaign_id = k.c AND s.period = k.p",
        [c for c, _ in keys],
        [p for _, p in keys],
    )
    return {(r["campaign_id"], r["period"]) for r in rows}


def _slice(r: asyncpg.Record) -> Slice:
    return Slice(int(r["slice"]), r["points_left"], r["awards_left"])


async def claim_free(conn: Conn, key: BudgetKey, start: int, count: int) -> list[Slice]:
    """Up to `count` non-empty slices no other transaction holds, from slice `start` on
    (batches start at different slices): never waits."""
    rows = await conn.fetch(
        "SELECT slice, points_left, awards_left FROM points.campaign_budget_slices"
        f" WHERE campaign_id = $1 AND period = $2 AND {_NOT_EMPTY}"
        " ORDER BY (slice - $3 + $4) % $4 LIMIT $5 FOR UPDATE SKIP LOCKED",
        key[0],
        key[1],
        start,
        SLICES,
        count,
    )
    return [_slice(r) for r in rows]


async def claim_all(conn: Conn, key: BudgetKey) -> list[Slice]:
    """Every non-empty slice, waiting for their holders, in slice order (the order every
    waiter takes, so waiters never wait for each other in a cycle)."""
    rows = await conn.fetch(
        "SELECT slice, points_left, awards_left FROM points.campaign_budget_slices"
        f" WHERE campaign_id = $1 AND period = $2 AND {_NOT_EMPTY}"
        " ORDER BY slice FOR UPDATE",
        key[0],
        key[1],
    )
    return [_slice(r) for r in rows]


async def member_usage(
    conn: Conn, member_ids: Sequence[str], campaign_ids: Sequence[str]
) -> dict[MemberKey, tuple[int, int]]:
    """(points, awards) each member got of each campaign; read under the members' locks."""
    rows = await conn.fetch(
        "SELECT member_id, campaign_id, points, awards FROM points.campaign_member_usage"
        " WHERE member_id = ANY($1::text[]) AND campaign_id = ANY($2::text[])",
        list(member_ids),
        list(campaign_ids),
    )
    return {(r["member_id"], r["campaign_id"]): (int(r["points"]), int(r["awards"])) for r in rows}
