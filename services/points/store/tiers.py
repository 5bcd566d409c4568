"""SQL of tiers: a member's tier row, qualifying points per day, and the window sum."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from services.points.domain.tiers import TierState, TierView
from services.runtime.db import Conn


def set_tier_sql(first: int) -> str:
    """Upsert of a member's tier; parameters $first.. are member_id and the TierState
    fields in order (so the statement can be a CTE of a larger one)."""
    p = [f"${first + i}" for i in range(6)]
    return (
        "INSERT INTO points.member_tiers"
        " (member_id, tier_code, since, review_at, grace_until, rule_version)"
        f" VALUES ({', '.join(p)}) ON CONFLICT (member_id) DO UPDATE SET"
        " tier_code = EXCLUDED.tier_code, since = EXCLUDED.since,"
        " review_at = EXCLUDED.review_at, grace_until = EXCLUDED.grace_until,"
        " rule_version = EXCLUDED.rule_version"
    )


def tier_args(state: TierState) -> tuple[Any, ...]:
    return (state.code, state.since, state.review_at, state.grace_until, state.rule_version)


def state_of(row: Any) -> TierState | None:
    """The TierState of a row with columns tier_code, since, review_at, grace_until,
    tier_version (NULLs from a LEFT JOIN: no tier row)."""
    if row["tier_code"] is None:
        return None
    return TierState(
        row["tier_code"], row["since"], row["review_at"], row["grace_until"], row["tier_version"]
    )


TIER_COLUMNS = (
    "mt.tier_code, mt.since, mt.review_at, mt.grace_until, mt.rule_version AS tier_version"
)


def qualifying_sql(member: str, first: int) -> str:
    """The window sum of `member` (an SQL expression) over days $first..$first+1."""
    return (
        "(SELECT COALESCE(sum(q.points), 0) FROM points.qualifying_days q"
        f" WHERE q.member_id = {member} AND q.day BETWEEN ${first} AND ${first + 1})"
    )


async def set_tier(conn: Conn, member_id: str, state: TierState) -> None:
    await conn.execute(set_tier_sql(1), member_id, *tier_args(state))


async def add_qualifying(conn: Conn, member_id: str, day: date, points: int) -> None:
    await conn.execute(
        "INSERT INTO points.qualifying_days (member_id, day, points) VALUES ($1, $2, $3)"
        " ON CONFLICT (member_id, day)"
        " DO UPDATE SET points = points.qualifying_days.points + EXCLUDED.points",
        member_id,
        day,
        points,
    )


async def take_qualifying(conn: Conn, member_id: str, day: date, points: int) -> None:
    """A refund's clawback leaves the day's qualifying points (never below 0: payments
    settled before tiers existed may have no row)."""
    await conn.execute(
        "UPDATE points.qualifying_days SET points = GREATEST(0, points - $3)"
        " WHERE member_id = $1 AND day = $2",
        member_id,
        day,
        points,
    )


async def tier_views(
    conn: Conn, member_ids: Sequence[str], first: date, last: date
) -> dict[str, TierView]:
    """Tier rows and window sums of several members in one query."""
    rows = await conn.fetch(
        f"SELECT k.member_id, {TIER_COLUMNS}, {qualifying_sql('k.member_id', 2)} AS qualifying"
        " FROM unnest($1::text[]) AS k(member_id)"
        " LEFT JOIN points.member_tiers mt ON mt.member_id = k.member_id",
        list(member_ids),
        first,
        last,
    )
    return {r["member_id"]: TierView(state_of(r), int(r["qualifying"])) for r in rows}


async def due_reviews(conn: Conn, now: datetime, limit: int) -> list[str]:
    """Members whose tier review (or grace end) is due, soonest first."""
    rows = await conn.fetch(
        "SELECT member_id FROM points.member_tiers"
        " WHERE review_at IS NOT NULL AND COALESCE(grace_until, review_at) <= $1"
        " ORDER BY COALESCE(grace_until, review_at), member_id LIMIT $2",
        now,
        limit,
    )
    return [r["member_id"] for r in rows]


async def tier_rows(conn: Conn, member_ids: Sequence[str]) -> dict[str, TierState]:
    rows = await conn.fetch(
        f"SELECT mt.member_id, {TIER_COLUMNS} FROM points.member_tiers mt"
        " WHERE mt.member_id = ANY($1::text[])",
        list(member_ids),
    )
    found = {r["member_id"]: state_of(r) for r in rows}
    return {m: s for m, s in found.items() if s is not None}


async def window_sums(
    conn: Conn, member_ids: Sequence[str], first: date, last: date
) -> dict[str, int]:
    return {m: v.qualifying for m, v in (await tier_views(conn, member_ids, first, last)).items()}


async def set_tiers(conn: Conn, states: Mapping[str, TierState]) -> None:
    """Several members' tier rows in one statement."""
    items = sorted(states.items())
    await conn.execute(
        "INSERT INTO points.member_tiers"
        " (member_id, tier_code, since, review_at, grace_until, rule_version)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],"
        "  $5::timestamptz[], $6::bigint[])"
        " ON CONFLICT (member_id) DO UPDATE SET tier_code = EXCLUDED.tier_code,"
        " since = EXCLUDED.since, review_at = EXCLUDED.review_at,"
        " grace_until = EXCLUDED.grace_until, rule_version = EXCLUDED.rule_version",
        [m for m, _ in items],
        *[[tier_args(s)[i] for _, s in items] for i in range(5)],
    )
