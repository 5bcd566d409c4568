"""SQL of the rewards catalogue (points.rewards, a small reference table) and of the units
each member redeemed (points.reward_redemptions, member-scoped).

Lock order of a reward redemption: the member's balance row (store/balance.lock_balance), the
member's lots (store/spending.py), then the reward's row, last: its conditional UPDATE is the
only lock on a row shared by every member, so it is held for as little as the commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.points.domain.rewards import Availability, CatalogueEntry, Reward
from services.runtime.db import Conn

_COLUMNS = (
    "r.sku, r.name, r.points_cost, r.stock, r.per_member_limit, r.min_tier, r.active,"
    " r.coupon_template"
)


def _row(r: Any) -> Reward:
    return Reward(
        r["sku"],
        r["name"],
        int(r["points_cost"]),
        None if r["stock"] is None else int(r["stock"]),
        None if r["per_member_limit"] is None else int(r["per_member_limit"]),
        r["min_tier"],
        bool(r["active"]),
        r["coupon_template"],
    )


async def sync_catalogue(conn: Conn, entries: Sequence[CatalogueEntry]) -> None:
    """Writes the file's rewards; what is left (`stock`) changes only by what the file's stock
    changed since the last sync, so a reload (or a second replica starting) never resets
    consumed stock. From unlimited to finite, the file's stock is what is left. Rewards no
    longer in the file are retired, not deleted: redemptions refer to them."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO points.rewards AS r (sku, name, points_cost, stock, stock_loaded,"
            " per_member_limit, min_tier, active, coupon_template)"
            " SELECT s, n, c, st, st, l, t, a, ct FROM unnest($1::text[], $2::text[],"
            " $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bool[], $8::text[])"
            " AS e(s, n, c, st, l, t, a, ct)"
            " ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name,"
            " coupon_template = EXCLUDED.coupon_template,"
            " points_cost = EXCLUDED.points_cost, per_member_limit = EXCLUDED.per_member_limit,"
            " min_tier = EXCLUDED.min_tier, active = EXCLUDED.active, updated_at = now(),"
            " stock = CASE WHEN EXCLUDED.stock_loaded IS NULL THEN NULL"
            " WHEN r.stock_loaded IS NULL THEN EXCLUDED.stock_loaded"
            " ELSE GREATEST(0, r.stock + EXCLUDED.stock_loaded - r.stock_loaded) END,"
            " stock_loaded = EXCLUDED.stock_loaded",
            [e.sku for e in entries],
            [e.name for e in entries],
            [e.points_cost for e in entries],
            [e.stock for e in entries],
            [e.per_member_limit for e in entries],
            [e.min_tier for e in entries],
            [e.active for e in entries],
            [e.coupon_template for e in entries],
        )
        await conn.execute(
            "UPDATE points.rewards SET active = false, updated_at = now()"
            " WHERE active AND NOT (sku = ANY($1::text[]))",
            [e.sku for e in entries],
        )


async def list_rewards(
    conn: Conn, after_sku: str, limit: int, only: Availability | None
) -> list[Reward]:
    """Active rewards by sku after `after_sku`; with `only`, those the member may redeem."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM points.rewards r"
        " LEFT JOIN points.reward_redemptions m ON m.member_id = $3 AND m.sku = r.sku"
        " WHERE r.active AND r.sku > $1 AND ($3::text IS NULL OR ("
        " r.min_tier = ANY($4::text[]) AND (r.stock IS NULL OR r.stock > 0)"
        " AND (r.per_member_limit IS NULL OR COALESCE(m.units, 0) < r.per_member_limit)))"
        " ORDER BY r.sku LIMIT $2",
        after_sku,
        limit,
        only.member_id if only else None,
        list(only.tier_codes) if only else [],
    )
    return [_row(r) for r in rows]


async def get_reward(conn: Conn, sku: str) -> Reward | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM points.rewards r WHERE r.sku = $1", sku)
    return None if row is None else _row(row)


async def units_redeemed(conn: Conn, member_id: str, sku: str) -> int:
    """Read under the member's balance lock: no concurrent redemption of the member moves it."""
    value = await conn.fetchval(
        "SELECT units FROM points.reward_redemptions WHERE member_id = $1 AND sku = $2",
        member_id,
        sku,
    )
    return int(value or 0)


async def add_units(conn: Conn, member_id: str, sku: str, units: int) -> None:
    await conn.execute(
        "INSERT INTO points.reward_redemptions (member_id, sku, units) VALUES ($1, $2, $3)"
        " ON CONFLICT (member_id, sku) DO UPDATE"
        " SET units = points.reward_redemptions.units + EXCLUDED.units, updated_at = now()",
        member_id,
        sku,
        units,
    )


async def take_stock(conn: Conn, sku: str, units: int) -> bool:
    """Takes `units` of a finite stock if that many are left (and the reward still active);
    False otherwise. A concurrent taker waits on the row and PostgreSQL re-checks the
    condition on the row it committed, so stock is never oversold."""
    left = await conn.fetchval(
        "UPDATE points.rewards SET stock = stock - $2"
        " WHERE sku = $1 AND active AND stock >= $2 RETURNING stock",
        sku,
        units,
    )
    return left is not None
