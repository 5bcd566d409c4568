"""SQL of settling one payment in three statements: lock, read under the lock, write.

Settlement is the hot path; each round trip costs the service more CPU than the SQL costs
PostgreSQL, so the steps that the general ledger functions do one by one are folded here.
"""

from __future__ import annotations

from datetime import date

import asyncpg

from services.points.domain.ledger import LotState
from services.points.domain.referrals import DueReferral
from services.points.domain.settlement import (
    Credit,
    LedgerIds,
    Locked,
    Seen,
    SettlementRow,
    StoredPrior,
)
from services.points.domain.tiers import TierState
from services.points.store.members import EFFECTIVE_STATE
from services.points.store.processing_pauses import PAUSED
from services.points.store.tiers import (
    TIER_COLUMNS,
    qualifying_sql,
    set_tier_sql,
    state_of,
    tier_args,
)
from services.runtime.db import Conn


async def lock_known_member(conn: Conn, member_id: str, available_floor: int) -> Locked | None:
    """Creates or locks the balance of a member points knows (None otherwise), and draws
    the ids the settlement may need. The lock serialises every change of the member's
    points; statements after it see what earlier holders committed."""
    row = await conn.fetchrow(
        "INSERT INTO points.balances (member_id, available_floor)"
        " SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM points.members WHERE member_id = $1)"
        " ON CONFLICT (member_id) DO UPDATE SET updated_at = points.balances.updated_at"
        " RETURNING available, nextval('points.ledger_ids') AS txn_id,"
        " nextval('points.ledger_ids') AS lot_id, nextval('points.ledger_ids') AS transfer_id",
        member_id,
        available_floor,
    )
    if row is None:
        return None
    ids = LedgerIds(row["txn_id"], row["lot_id"], row["transfer_id"])
    return Locked(row["available"], ids)


async def read_under_lock(
    conn: Conn,
    member_id: str,
    *,
    key: str,
    day: date,
    window: tuple[date, date] | None = None,
) -> Seen:
    """`window`: the qualifying window's first and last day (callers that need no window
    sum, such as grants, leave it out)."""
    row = await conn.fetchrow(
        f"SELECT {EFFECTIVE_STATE} AS state, t.request_hash, t.result::text AS result,"
        " t.txn_id, t.points, t.rule_version, t.settled_state, t.multiplier_bps,"
        " t.available_at, t.expires_at,"
        " COALESCE(d.points, 0) AS earned_today,"
        f" {TIER_COLUMNS}, {qualifying_sql('m.member_id', 4)} AS qualifying"
        f", m.referred_by, {PAUSED} AS paused FROM points.members m"
        " LEFT JOIN points.transactions t ON t.member_id = m.member_id"
        "  AND t.idempotency_key = $2"
        " LEFT JOIN points.daily_earnings d ON d.member_id = m.member_id AND d.day = $3"
        " LEFT JOIN points.member_tiers mt ON mt.member_id = m.member_id"
        " WHERE m.member_id = $1",
        member_id,
        key,
        day,
        *(window or (day, day)),
    )
    if row is None:
        raise LookupError("member vanished under its own balance lock")
    return Seen(
        row["state"],
        _prior(row),
        int(row["earned_today"]),
        state_of(row),
        int(row["qualifying"]),
        row["referred_by"],
        bool(row["paused"]),
    )


def _prior(row: asyncpg.Record) -> StoredPrior | None:
    if row["request_hash"] is None:
        return None
    state = row["settled_state"]
    columns = None
    if state is not None:
        columns = (state, int(row["multiplier_bps"]), row["available_at"], row["expires_at"])
    return StoredPrior(
        bytes(row["request_hash"]),
        row["result"],
        int(row["txn_id"]),
        int(row["points"]),
        int(row["rule_version"]),
        columns,
    )


# the result as columns ($7-$10, domain/settlement.StoredPrior), the explanation ($11)
_TRANSACTION = (
    "INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key, request_hash,"
    " rule_version, points, settled_state, multiplier_bps, available_at, expires_at,"
    " explanation) VALUES ($1, $2, 'settlement', $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)

_CREDITED_CTES = (
    "WITH txn AS (" + _TRANSACTION + "),"
    " lot AS (INSERT INTO points.lots (member_id, lot_id, txn_id, state, points, remaining,"
    "  earned_at, available_at, expires_at, rule_version)"
    "  VALUES ($1, $12, $2, $13, $6, $6, $14, $15, $16, $5)),"
    " moved AS (INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
    "  to_account, amount, lot_id, rule_version)"
    "  VALUES ($1, $17, $2, 'program:issued', $18, $6, $12, $5)),"
    " balance AS (UPDATE points.balances SET pending = pending + $19,"
    "  available = available + $20, lifetime_earned = lifetime_earned + $6, updated_at = now()"
    "  WHERE member_id = $1),"
    " today AS (INSERT INTO points.daily_earnings (member_id, day, points) VALUES ($1, $21, $22)"
    "  ON CONFLICT (member_id, day)"
    "  DO UPDATE SET points = points.daily_earnings.points + EXCLUDED.points),"
    " qualifying AS (INSERT INTO points.qualifying_days (member_id, day, points)"
    "  VALUES ($1, $21, $23) ON CONFLICT (member_id, day)"
    "  DO UPDATE SET points = points.qualifying_days.points + EXCLUDED.points)"
)
_CREDITED = _CREDITED_CTES + " SELECT 1"
# the same, and the upgrade the payment's qualifying points reach ($24: member_id again)
_UPGRADED = _CREDITED_CTES + ", tier AS (" + set_tier_sql(24) + ") SELECT 1"


# a referred member's first settlement records the referral bonus as due (once: the
# primary key); the `referral_bonus` job pays it ($1 referee, $5 rule version)
_REFERRAL = (
    ", referral AS (INSERT INTO points.referral_bonuses (member_id, referrer_id, payment_id,"
    "  rule_version) VALUES ($1, ${0}, ${1}, $5) ON CONFLICT (member_id) DO NOTHING)"
)


def _with_referral(ctes: str, args: int) -> str:
    return ctes + _REFERRAL.format(args + 1, args + 2) + " SELECT 1"


async def write_settlement(
    conn: Conn,
    member_id: str,
    row: SettlementRow,
    credit: Credit | None,
    *,
    upgrade: TierState | None = None,
    referral: DueReferral | None = None,
    counted: tuple[int, int] | None = None,
) -> None:
    """The transaction row and, when points were earned, its lot, transfer, balance,
    daily total, qualifying points and tier upgrade: one statement. `referral`: the member
    has a referrer, and its bonus may be due (once: the row's primary key). `counted`: the
    points the daily cap counts and the tier-qualifying points (default: all of them;
    campaign points count by the campaign's rule, domain/campaign_awards.py)."""
    result = row.result
    head = (
        member_id,
        row.txn_id,
        row.key,
        row.request_hash,
        row.rule_version,
        row.points,
        result.state,
        result.tier_multiplier_bps,
        result.available_at,
        result.expires_at,
        row.explanation,
    )
    if credit is None:
        if referral is None:
            await conn.execute(_TRANSACTION, *head)
        else:
            ctes = "WITH txn AS (" + _TRANSACTION + ")"
            await conn.execute(_with_referral(ctes, len(head)), *head, *_referral(referral))
        return
    pending = credit.state == LotState.PENDING
    tier = () if upgrade is None else (member_id, *tier_args(upgrade))
    args = (
        *head,
        credit.lot_id,
        credit.state,
        credit.earned_at,
        credit.available_at,
        credit.expires_at,
        credit.transfer_id,
        credit.to_account,
        row.points if pending else 0,
        0 if pending else row.points,
        credit.day,
        *(counted or (row.points, row.points)),
        *tier,
    )
    if referral is None:
        await conn.execute(_CREDITED if upgrade is None else _UPGRADED, *args)
        return
    ctes = _CREDITED_CTES + ("" if upgrade is None else ", tier AS (" + set_tier_sql(24) + ")")
    await conn.execute(_with_referral(ctes, len(args)), *args, *_referral(referral))


def _referral(due: DueReferral) -> tuple[str, str]:
    """The referral's parameters after the settlement's ($1 is the referee, $5 the rule
    version already)."""
    return due.referrer_id, due.payment_id
