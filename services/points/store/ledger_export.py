"""SQL of a member's ledger export: the lots and holds a page of transactions made, and the
member's reward redemptions (transactions and transfers: store/transactions.py)."""

from __future__ import annotations

from collections.abc import Sequence

from services.points.domain.ledger_export import ExportedHold, ExportedLot, ExportedRedemption
from services.runtime.db import Conn


async def lots_of(conn: Conn, member_id: str, txn_ids: Sequence[int]) -> list[ExportedLot]:
    rows = await conn.fetch(
        "SELECT lot_id, txn_id, state, points, remaining, earned_at, available_at, expires_at,"
        " rule_version FROM points.lots WHERE member_id = $1 AND txn_id = ANY($2::bigint[])"
        " ORDER BY lot_id",
        member_id,
        list(txn_ids),
    )
    return [ExportedLot(**dict(r)) for r in rows]


async def holds_of(conn: Conn, member_id: str, txn_ids: Sequence[int]) -> list[ExportedHold]:
    rows = await conn.fetch(
        "SELECT hold_id, state, points, captured_points, expires_at, rule_version, hold_txn_id,"
        " created_at, closed_at, clawed_back_points FROM points.holds"
        " WHERE member_id = $1 AND hold_txn_id = ANY($2::bigint[]) ORDER BY hold_txn_id",
        member_id,
        list(txn_ids),
    )
    return [ExportedHold(**dict(r)) for r in rows]


async def redemptions_of(conn: Conn, member_id: str) -> list[ExportedRedemption]:
    """One row per sku: bounded by the catalogue."""
    rows = await conn.fetch(
        "SELECT sku, units, updated_at FROM points.reward_redemptions WHERE member_id = $1"
        " ORDER BY sku",
        member_id,
    )
    return [ExportedRedemption(**dict(r)) for r in rows]
