"""SQL of campaigns: their lifecycle (points.campaigns), versions (campaign_versions), the
epoch settlement batches watch, and what campaigns gave (campaign_results, in slices, and
campaign_member_usage)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.points.domain.campaign_budgets import CampaignWrite
from services.points.domain.campaigns import (
    Campaign,
    CampaignQuery,
    CampaignSpec,
    CampaignState,
    spec_of,
)
from services.runtime.db import Conn

_COLUMNS = (
    "c.campaign_id, c.state, c.version, v.spec::text AS spec, c.created_at, c.updated_at"
    " FROM points.campaigns c JOIN points.campaign_versions v"
    " ON v.campaign_id = c.campaign_id AND v.version = c.version"
)


def _campaign(r: asyncpg.Record) -> Campaign:
    return Campaign(
        r["campaign_id"],
        CampaignState(r["state"]),
        int(r["version"]),
        spec_of(json.loads(r["spec"])),
        r["created_at"],
        r["updated_at"],
    )


def _spec_json(spec: CampaignSpec) -> str:
    return json.dumps(spec.document(), sort_keys=True, ensure_ascii=False)


async def raise_epoch(conn: Conn) -> int:
    """First in every transaction that changes the running set: it also serialises them
    (overlap and count checks see each other's result)."""
    value = await conn.fetchval(
        "UPDATE points.campaign_epoch SET epoch = epoch + 1 WHERE one RETURNING epoch"
    )
    return int(value)


async def epoch(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT epoch FROM points.campaign_epoch WHERE one"))


async def insert(conn: Conn, campaign_id: str, spec: CampaignSpec, now: datetime) -> bool:
    """False: the id exists (a concurrent create committed first)."""
    created = await conn.fetchval(
        "INSERT INTO points.campaigns (campaign_id, state, version, created_at, updated_at)"
        " VALUES ($1, 'DRAFT', 1, $2, $2) ON CONFLICT (campaign_id) DO NOTHING RETURNING true",
        campaign_id,
        now,
    )
    if not created:
        return False
    await conn.execute(
        "INSERT INTO points.campaign_versions (campaign_id, version, spec, created_at)"
        " VALUES ($1, 1, $2::jsonb, $3)",
        campaign_id,
        _spec_json(spec),
        now,
    )
    return True


async def given(conn: Conn, campaign_id: str) -> tuple[int, int]:
    """Points and awards the campaign gave (its result slices summed)."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(points), 0) AS points, coalesce(sum(awards), 0) AS awards"
        " FROM points.campaign_results WHERE campaign_id = $1",
        campaign_id,
    )
    if row is None:
        return 0, 0
    return int(row["points"]), int(row["awards"])


async def get(conn: Conn, campaign_id: str, *, lock: bool = False) -> Campaign | None:
    lock_clause = " FOR UPDATE OF c" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} WHERE c.campaign_id = $1{lock_clause}", campaign_id
    )
    return None if row is None else _campaign(row)


async def replace_draft(conn: Conn, campaign_id: str, spec: CampaignSpec, now: datetime) -> None:
    await conn.execute(
        "WITH v AS (UPDATE points.campaign_versions SET spec = $2::jsonb, created_at = $3"
        " WHERE campaign_id = $1 AND version = 1)"
        " UPDATE points.campaigns SET updated_at = $3 WHERE campaign_id = $1",
        campaign_id,
        _spec_json(spec),
        now,
    )


async def add_version(
    conn: Conn, campaign_id: str, version: int, spec: CampaignSpec, now: datetime
) -> None:
    await conn.execute(
        "WITH v AS (INSERT INTO points.campaign_versions (campaign_id, version, spec, created_at)"
        " VALUES ($1, $2, $3::jsonb, $4))"
        " UPDATE points.campaigns SET version = $2, updated_at = $4 WHERE campaign_id = $1",
        campaign_id,
        version,
        _spec_json(spec),
        now,
    )


async def set_state(conn: Conn, campaign_id: str, state: CampaignState, now: datetime) -> None:
    column = "activated_at" if state is CampaignState.ACTIVE else "ended_at"
    await conn.execute(
        f"UPDATE points.campaigns SET state = $2, updated_at = $3, {column} = $3"
        " WHERE campaign_id = $1",
        campaign_id,
        state.value,
        now,
    )


async def running(conn: Conn) -> list[Campaign]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} WHERE c.state = 'ACTIVE' ORDER BY c.campaign_id")
    return [_campaign(r) for r in rows]


async def list_page(conn: Conn, query: CampaignQuery) -> list[Campaign]:
    """One more than the page, to tell whether another follows."""
    states = sorted(s.value for s in query.states)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} WHERE c.campaign_id > $1"
        " AND (cardinality($2::text[]) = 0 OR c.state = ANY($2::text[]))"
        " AND ($3::timestamptz IS NULL OR ((v.spec ->> 'start_at')::timestamptz <= $3"
        "      AND $3 < (v.spec ->> 'end_at')::timestamptz))"
        " ORDER BY c.campaign_id LIMIT $4",
        query.after,
        states,
        query.active_at,
        query.page_size + 1,
    )
    return [_campaign(r) for r in rows]


def campaign_ctes(first: int) -> str:
    """The CTEs that write a CampaignWrite, its 17 parameters from `$first` on (also part
    of the settlement batch's statement, store/settlement_batch.py)."""
    n = [f"${first + i}" for i in range(17)]
    return (
        "campaign_results AS (INSERT INTO points.campaign_results (campaign_id, slice, points,"
        f"  awards) SELECT * FROM unnest({n[0]}::text[], {n[1]}::int[], {n[2]}::bigint[],"
        f"  {n[3]}::bigint[])"
        "  ON CONFLICT (campaign_id, slice) DO UPDATE SET"
        "  points = points.campaign_results.points + EXCLUDED.points,"
        "  awards = points.campaign_results.awards + EXCLUDED.awards),"
        " campaign_usage AS (INSERT INTO points.campaign_member_usage (member_id, campaign_id,"
        f"  points, awards) SELECT * FROM unnest({n[4]}::text[], {n[5]}::text[],"
        f"  {n[6]}::bigint[], {n[7]}::bigint[])"
        "  ON CONFLICT (member_id, campaign_id) DO UPDATE SET"
        "  points = points.campaign_member_usage.points + EXCLUDED.points,"
        "  awards = points.campaign_member_usage.awards + EXCLUDED.awards),"
        " campaign_budgets AS (UPDATE points.campaign_budget_slices s"
        "  SET points_left = s.points_left - d.p, awards_left = s.awards_left - d.a"
        f"  FROM unnest({n[8]}::text[], {n[9]}::text[], {n[10]}::int[], {n[11]}::bigint[],"
        f"  {n[12]}::bigint[]) AS d(c, period, i, p, a)"
        "  WHERE s.campaign_id = d.c AND s.period = d.period AND s.slice = d.i),"
        " campaign_coupons AS (INSERT INTO points.campaign_coupons_due (member_id, campaign_id,"
        f"  payment_id, template_id) SELECT * FROM unnest({n[13]}::text[], {n[14]}::text[],"
        f"  {n[15]}::text[], {n[16]}::text[]) ON CONFLICT DO NOTHING)"
    )


def campaign_args(given: CampaignWrite) -> list[list[Any]]:
    usage, spent = given.usage, given.spent
    return [
        *_columns(given.results, 4),
        [k[0] for k, _, _ in usage],
        [k[1] for k, _, _ in usage],
        [p for _, p, _ in usage],
        [a for _, _, a in usage],
        [k[0] for k, _ in spent],
        [k[1] for k, _ in spent],
        [s.slice for _, s in spent],
        [s.points for _, s in spent],
        [s.awards for _, s in spent],
        *_columns(given.coupons, 4),
    ]


_RECORD = "WITH " + campaign_ctes(1) + " SELECT 1"


async def record_awards(conn: Conn, given: CampaignWrite) -> None:
    """What campaigns gave settlements that the batch's statement did not write (the
    one-by-one path's): each campaign's results, members' usage, the budget slices."""
    await conn.execute(_RECORD, *campaign_args(given))


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(width)]


# the settlements of a period, in the order they settled, with what a campaign reads of
# each: the payment (its explanation's), the tier multiplier it earned at, when its member
# joined and whether it was the member's first settlement (an index probe per payment)
_SETTLED = """
SELECT t.member_id, t.explanation -> 'payment' AS payment,
       coalesce(t.multiplier_bps, (t.result ->> 'tier_multiplier_bps')::integer) AS bps,
       m.registered_at,
       (SELECT true FROM points.transactions e WHERE e.member_id = t.member_id
          AND e.kind = 'settlement' AND e.txn_id < t.txn_id LIMIT 1) IS NULL AS first
FROM points.transactions t JOIN points.members m ON m.member_id = t.member_id
WHERE t.kind = 'settlement' AND t.created_at >= $1 AND t.created_at < $3
  AND (t.explanation -> 'payment' ->> 'occurred_at')::timestamptz >= $1
  AND (t.explanation -> 'payment' ->> 'occurred_at')::timestamptz < $2
ORDER BY t.created_at, t.txn_id
LIMIT $4
"""
SIMULATION_TIMEOUT_MS = 120_000  # an operator's scan of a period: longer than a request's


async def settled_in(
    conn: Conn, start: datetime, end: datetime, settled_by: datetime, limit: int
) -> AsyncIterator[asyncpg.Record]:
    """The settlements of payments that occurred in [start, end) and settled before
    `settled_by`, oldest settlement first; inside the caller's (read-only) transaction."""
    await conn.execute(f"SET LOCAL statement_timeout = {SIMULATION_TIMEOUT_MS}")
    async for row in conn.cursor(_SETTLED, start, end, settled_by, limit, prefetch=1000):
        yield row


async def due_coupons(conn: Conn, limit: int) -> list[asyncpg.Record]:
    """Coupon campaigns' awards not issued yet, oldest first, locked (SKIP LOCKED)."""
    return await conn.fetch(
        "SELECT member_id, campaign_id, payment_id, template_id"
        " FROM points.campaign_coupons_due WHERE done_at IS NULL"
        " ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED",
        limit,
    )


async def mark_coupons_done(
    conn: Conn, done: Sequence[tuple[str, str, str, str | None]], now: datetime
) -> None:
    """(member, campaign, payment, refusal reason or None) of the awards dealt with."""
    await conn.execute(
        "UPDATE points.campaign_coupons_due d SET done_at = $5, refused = u.r"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(m, c, p, r)"
        " WHERE d.member_id = u.m AND d.campaign_id = u.c AND d.payment_id = u.p",
        *_columns(done, 4),
        now,
    )
