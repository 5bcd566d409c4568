"""SQL of campaign budget slices and members' campaign usage (domain/campaign_budgets.py)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.points.domain.campaign_awards import BudgetKey, MemberKey
from services.points.domain.campaign_budgets import Slice
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


def _slice(r: asyncpg.Record) -> Slice:
    return Slice(int(r["slice"]), r["points_left"], r["awards_left"])


async def claim(
    conn: Conn,
    wanted: Sequence[tuple[BudgetKey, int, int]],
    cut: Sequence[tuple[BudgetKey, Slice]],
    first_slice: int,
    per_budget: int,
) -> dict[BudgetKey, list[Slice]]:
    """The slices a batch holds of each budget (key, points and awards it may give): a few
    free ones when they cover it, else every non-empty one, waited for; `cut`: the slices
    of day budgets, created if the day has none yet (the function
    points.claim_campaign_budgets, migration 013, says how and why, in one round trip)."""
    rows = await conn.fetch(
        "SELECT * FROM points.claim_campaign_budgets($1::text[], $2::text[], $3::bigint[],"
        " $4::bigint[], $5, $6, $7::text[], $8::text[], $9::int[], $10::bigint[],"
        " $11::bigint[])",
        [k[0] for k, _, _ in wanted],
        [k[1] for k, _, _ in wanted],
        [p for _, p, _ in wanted],
        [a for _, _, a in wanted],
        first_slice,
        per_budget,
        [k[0] for k, _ in cut],
        [k[1] for k, _ in cut],
        [s.slice for _, s in cut],
        [s.points_left for _, s in cut],
        [s.awards_left for _, s in cut],
    )
    return _by_key([k for k, _, _ in wanted], rows)


def _by_key(
    keys: Sequence[BudgetKey], rows: Sequence[asyncpg.Record]
) -> dict[BudgetKey, list[Slice]]:
    held: dict[BudgetKey, list[Slice]] = {key: [] for key in keys}
    for r in rows:
        held[(r["campaign_id"], r["period"])].append(_slice(r))
    return held


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
