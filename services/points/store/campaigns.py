"""SQL of campaigns: their lifecycle (points.campaigns), versions (campaign_versions), the
epoch settlement batches watch, and what settlements got from them (settlement_campaigns,
campaign_member_usage)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.points.domain.campaign_awards import BudgetKey, MemberKey
from services.points.domain.campaign_budgets import SliceSpend
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
    """Points and awards the campaign gave (every settlement it gave points)."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(points), 0) AS points, count(*) AS awards"
        " FROM points.settlement_campaigns WHERE campaign_id = $1",
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


# (member_id, txn_id, campaign_id, version, points, tier_qualifying, occurred_at)
AwardRow = tuple[str, int, str, int, int, bool, datetime]


async def record_awards(
    conn: Conn,
    awards: Sequence[AwardRow],
    usage: Sequence[tuple[MemberKey, int, int]],
    spent: Sequence[tuple[BudgetKey, SliceSpend]],
) -> None:
    """What a batch's campaigns gave, in one statement: a row per (settlement, campaign),
    each member's usage of campaigns with a per-member budget, and the budget slices'
    points and awards taken."""
    if not awards:
        return
    await conn.execute(
        "WITH given AS (INSERT INTO points.settlement_campaigns (member_id, txn_id, campaign_id,"
        "  version, points, tier_qualifying, occurred_at)"
        "  SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[],"
        "  $5::bigint[], $6::bool[], $7::timestamptz[])),"
        " used AS (INSERT INTO points.campaign_member_usage (member_id, campaign_id, points,"
        "  awards) SELECT * FROM unnest($8::text[], $9::text[], $10::bigint[], $11::bigint[])"
        "  ON CONFLICT (member_id, campaign_id) DO UPDATE SET"
        "  points = points.campaign_member_usage.points + EXCLUDED.points,"
        "  awards = points.campaign_member_usage.awards + EXCLUDED.awards)"
        " UPDATE points.campaign_budget_slices s"
        " SET points_left = s.points_left - d.p, awards_left = s.awards_left - d.a"
        " FROM unnest($12::text[], $13::text[], $14::int[], $15::bigint[], $16::bigint[])"
        " AS d(c, period, i, p, a)"
        " WHERE s.campaign_id = d.c AND s.period = d.period AND s.slice = d.i",
        *_columns(awards, 7),
        [k[0] for k, _, _ in usage],
        [k[1] for k, _, _ in usage],
        [p for _, p, _ in usage],
        [a for _, _, a in usage],
        [k[0] for k, _ in spent],
        [k[1] for k, _ in spent],
        [s.slice for _, s in spent],
        [s.points for _, s in spent],
        [s.awards for _, s in spent],
    )


def _columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[r[i] for r in rows] for i in range(width)]


async def awards_of(conn: Conn, member_id: str, txn_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT campaign_id, version, points, tier_qualifying FROM points.settlement_campaigns"
        " WHERE member_id = $1 AND txn_id = $2 ORDER BY campaign_id",
        member_id,
        txn_id,
    )


async def non_qualifying_points(conn: Conn, member_id: str, txn_id: int) -> int:
    """The campaign points of a settlement that do not count toward tiers."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(points), 0) FROM points.settlement_campaigns"
        " WHERE member_id = $1 AND txn_id = $2 AND NOT tier_qualifying",
        member_id,
        txn_id,
    )
    return int(value)
