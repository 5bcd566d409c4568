"""SQL of a member's ledger export: the lots and holds a page of transactions made, and the
member's reward redemptions (transactions and transfers: store/transactions.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.runtime.db import Conn


@dataclass(frozen=True)
class LotRow:
    lot_id: int
    txn_id: int
    state: str
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    rule_version: int


@dataclass(frozen=True)
class HoldRow:
    hold_id: str
    state: str
    points: int
    captured_points: int
    expires_at: datetime
    rule_version: int
    hold_txn_id: int
    created_at: datetime
    closed_at: datetime | None
    clawed_back_points: int


@dataclass(frozen=True)
class RedemptionRow:
    sku: str
    units: int
    updated_at: datetime


async def lots_of(conn: Conn, member_id: str, txn_ids: Sequence[int]) -> list[LotRow]:
    rows = await conn.fetch(
        "SELECT lot_id, txn_id, state, points, remaining, earned_at, available_at, expires_at,"
        " rule_version FROM points.lots WHERE member_id = $1 AND txn_id = ANY($2::bigint[])"
        " ORDER BY lot_id",
        member_id,
        list(txn_ids),
    )
    return [LotRow(**dict(r)) for r in rows]


async def holds_of(conn: Conn, member_id: str, txn_ids: Sequence[int]) -> list[HoldRow]:
    rows = await conn.fetch(
        "SELECT hold_id, state, points, captured_points, expires_at, rule_version, hold_txn_id,"
        " created_at, closed_at, clawed_back_points FROM points.holds"
        " WHERE member_id = $1 AND hold_txn_id = ANY($2::bigint[]) ORDER BY hold_txn_id",
        member_id,
        list(txn_ids),
    )
    return [HoldRow(**dict(r)) for r in rows]


async def redemptions_of(conn: Conn, member_id: str) -> list[RedemptionRow]:
    """One row per sku: bounded by the catalogue."""
    rows = await conn.fetch(
        "SELECT sku, units, updated_at FROM points.reward_redemptions WHERE member_id = $1"
        " ORDER BY sku",
        member_id,
    )
    return [RedemptionRow(**dict(r)) for r in rows]
