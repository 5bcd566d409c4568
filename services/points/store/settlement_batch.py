"""SQL of settling a batch set-wise: a handful of statements for the whole batch instead of
a few per payment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from services.points.domain.campaign_budgets import CampaignWrite
from services.points.domain.settlement import Prior, StoredPrior
from services.points.domain.settlement_batch import (
    BatchSeen,
    BatchWrite,
    LotColumns,
    MemberSeen,
    TransactionColumns,
    TransferColumns,
)
from services.points.domain.tiers import TierState
from services.points.store.campaigns import campaign_args, campaign_ctes
from services.points.store.coupons import redeem_cte
from services.points.store.members import EFFECTIVE_STATE
from services.points.store.processing_pauses import PAUSED
from services.points.store.tiers import qualifying_sql
from services.runtime.db import Conn


async def lock_known_members(
    conn: Conn, member_ids: Sequence[str], available_floor: int
) -> dict[str, int]:
    """Creates or locks the balances of the members points knows, in member order (the
    order every writer uses); returns their available points."""
    rows = await conn.fetch(
        "INSERT INTO points.balances (member_id, available_floor)"
        " SELECT m.member_id, $2 FROM points.members m WHERE m.member_id = ANY($1::text[])"
        " ORDER BY m.member_id"
        " ON CONFLICT (member_id) DO UPDATE SET updated_at = points.balances.updated_at"
        " RETURNING member_id, available",
        sorted(member_ids),
        available_floor,
    )
    return {r["member_id"]: int(r["available"]) for r in rows}


# whether member m settled a payment before: a scalar subquery with LIMIT, so that it is an
# index probe per member (an EXISTS may be planned as a hashed subplan over every
# transaction, which grows with the ledger)
SETTLED_BEFORE = (
    "((SELECT true FROM points.transactions s WHERE s.member_id = m.member_id"
    " AND s.kind = 'settlement' LIMIT 1) IS NOT NULL)"
)

# public: the settlement benchmark reports its plan
READ_LOCKED = f"""
SELECT
  array(SELECT row(m.member_id, {EFFECTIVE_STATE},
          CASE WHEN NOT EXISTS (SELECT 1 FROM points.referral_bonuses r
                                WHERE r.member_id = m.member_id) THEN m.referred_by END,
          mt.tier_code, mt.since, mt.review_at, mt.grace_until, mt.rule_version,
          {qualifying_sql("m.member_id", 2)}, {PAUSED}, m.registered_at,
          CASE WHEN $9 THEN {SETTLED_BEFORE} END)
        FROM points.members m LEFT JOIN points.member_tiers mt ON mt.member_id = m.member_id
        WHERE m.member_id = ANY($1::text[])) AS members,
  array(SELECT row(t.member_id, t.idempotency_key, t.request_hash, t.result::text,
                   t.txn_id, t.points, t.rule_version, t.settled_state, t.multiplier_bps,
                   t.available_at, t.expires_at)
        FROM points.transactions t
        JOIN unnest($4::text[], $5::text[]) AS k(member_id, key)
          ON t.member_id = k.member_id AND t.idempotency_key = k.key) AS done,
  array(SELECT row(d.member_id, d.day, d.points) FROM points.daily_earnings d
        JOIN unnest($6::text[], $7::date[]) AS k(member_id, day)
          ON d.member_id = k.member_id AND d.day = k.day) AS earned,
  array(SELECT nextval('points.ledger_ids') FROM generate_series(1, $8)) AS ids,
  (SELECT epoch FROM points.campaign_epoch WHERE one) AS campaign_epoch,
  array(SELECT row(u.member_id, u.campaign_id, u.points, u.awards)
        FROM points.campaign_member_usage u
        WHERE u.member_id = ANY($1::text[]) AND u.campaign_id = ANY($10::text[])) AS usage
"""


async def read_locked(
    conn: Conn,
    member_ids: Sequence[str],
    *,
    keys: Sequence[tuple[str, str]],
    member_days: Sequence[tuple[str, date]],
    window: tuple[date, date],
    id_count: int,
    settled_before: bool = False,
    usage_of: Sequence[str] = (),
) -> BatchSeen:
    """Everything the batch decides on, in one statement after the members' locks (so it
    sees what earlier lock holders committed), and `id_count` new ledger ids.
    `settled_before`: also whether each member has settled a payment before (a campaign
    for first payments runs); `usage_of`: the campaigns with a per-member budget whose
    usage by these members to read."""
    row = await conn.fetchrow(
        READ_LOCKED,
        list(member_ids),
        *window,
        [m for m, _ in keys],
        [k for _, k in keys],
        [m for m, _ in member_days],
        [d for _, d in member_days],
        id_count,
        settled_before,
        list(usage_of),
    )
    if row is None:
        raise RuntimeError("a SELECT without FROM returned no row")
    return BatchSeen(
        members={r[0]: _member_seen(r) for r in row["members"]},
        done={(r[0], r[1]): _prior(r) for r in row["done"]},
        earned={(r[0], r[1]): int(r[2]) for r in row["earned"]},
        ids=[int(i) for i in row["ids"]],
        campaign_epoch=int(row["campaign_epoch"]),
        usage_of=frozenset(usage_of),
        usage={(r[0], r[1]): (int(r[2]), int(r[3])) for r in row["usage"]},
    )


async def settled_before(conn: Conn, member_ids: Sequence[str]) -> set[str]:
    """The members who have settled a payment before (read under their locks)."""
    rows = await conn.fetch(
        f"SELECT m.member_id FROM unnest($1::text[]) AS m(member_id) WHERE {SETTLED_BEFORE}",
        list(member_ids),
    )
    return {r["member_id"] for r in rows}


def _prior(r: tuple[Any, ...]) -> Prior:
    columns = None if r[7] is None else (r[7], int(r[8]), r[9], r[10])
    stored = StoredPrior(bytes(r[2]), r[3], int(r[4]), int(r[5]), int(r[6]), columns)
    return stored.settlement(r[0], r[1])


def _member_seen(r: tuple[Any, ...]) -> MemberSeen:
    tier = None if r[3] is None else TierState(r[3], r[4], r[5], r[6], int(r[7]))
    return MemberSeen(
        state=r[1],
        referrer=r[2],
        tier=tier,
        qualifying=int(r[8]),
        paused=bool(r[9]),
        registered_at=r[10],
        settled_before=r[11],
    )


def _transaction_columns(c: TransactionColumns) -> tuple[list[Any], ...]:
    return (
        c.member_id,
        c.txn_id,
        c.key,
        c.request_hash,
        c.rule_version,
        c.points,
        c.state,
        c.multiplier_bps,
        c.available_at,
        c.expires_at,
        c.explanation,
    )


def _lot_columns(c: LotColumns) -> tuple[list[Any], ...]:
    return (
        c.member_id,
        c.lot_id,
        c.txn_id,
        c.state,
        c.points,
        c.earned_at,
        c.available_at,
        c.expires_at,
        c.rule_version,
    )


def _transfer_columns(c: TransferColumns) -> tuple[list[Any], ...]:
    return (
        c.member_id,
        c.transfer_id,
        c.txn_id,
        c.from_account,
        c.to_account,
        c.amount,
        c.lot_id,
        c.rule_version,
    )


# the coupons reserved for the batch's payments are redeemed with them ($1 members, $3 keys)
_WRITE = f"""
WITH txn AS (
  INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key, request_hash,
    rule_version, points, settled_state, multiplier_bps, available_at, expires_at,
    explanation)
  SELECT t.m, t.id, 'settlement', t.k, t.h, t.v, t.p, t.s, t.x, t.a, t.z, t.e::jsonb
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::bigint[], $6::bigint[],
              $7::text[], $8::integer[], $9::timestamptz[], $10::timestamptz[], $11::text[])
       AS t(m, id, k, h, v, p, s, x, a, z, e)),
lot AS (
  INSERT INTO points.lots (member_id, lot_id, txn_id, state, points, remaining, earned_at,
    available_at, expires_at, rule_version)
  SELECT l.m, l.id, l.t, l.s, l.p, l.p, l.e, l.a, l.x, l.v
  FROM unnest($12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::bigint[],
              $17::timestamptz[], $18::timestamptz[], $19::timestamptz[], $20::bigint[])
       AS l(m, id, t, s, p, e, a, x, v)),
moved AS (
  INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account, to_account,
    amount, lot_id, rule_version)
  SELECT * FROM unnest($21::text[], $22::bigint[], $23::bigint[], $24::text[], $25::text[],
                       $26::bigint[], $27::bigint[], $28::bigint[])),
balance AS (
  UPDATE points.balances b SET pending = b.pending + d.pending,
    available = b.available + d.available, lifetime_earned = b.lifetime_earned + d.earned,
    updated_at = now()
  FROM unnest($29::text[], $30::bigint[], $31::bigint[], $32::bigint[])
       AS d(member_id, pending, available, earned)
  WHERE b.member_id = d.member_id),
today AS (
  INSERT INTO points.daily_earnings (member_id, day, points)
  SELECT * FROM unnest($33::text[], $34::date[], $35::bigint[])
  ON CONFLICT (member_id, day)
  DO UPDATE SET points = points.daily_earnings.points + EXCLUDED.points),
qualifying AS (
  INSERT INTO points.qualifying_days (member_id, day, points)
  SELECT * FROM unnest($46::text[], $47::date[], $48::bigint[])
  ON CONFLICT (member_id, day)
  DO UPDATE SET points = points.qualifying_days.points + EXCLUDED.points),
tiers AS (
  INSERT INTO points.member_tiers
    (member_id, tier_code, since, review_at, grace_until, rule_version)
  SELECT * FROM unnest($36::text[], $37::text[], $38::timestamptz[], $39::timestamptz[],
                       $40::timestamptz[], $41::bigint[])
  ON CONFLICT (member_id) DO UPDATE SET tier_code = EXCLUDED.tier_code,
    since = EXCLUDED.since, review_at = EXCLUDED.review_at,
    grace_until = EXCLUDED.grace_until, rule_version = EXCLUDED.rule_version),
referral AS (
  INSERT INTO points.referral_bonuses (member_id, referrer_id, payment_id, rule_version)
  SELECT * FROM unnest($42::text[], $43::text[], $44::text[], $45::bigint[])
  ON CONFLICT (member_id) DO NOTHING),
{redeem_cte(1, 3)}
SELECT 1
"""
# the same, and what the batch's campaigns gave ($49 on)
_WRITE_WITH_CAMPAIGNS = _WRITE.replace("\nSELECT 1\n", ",\n" + campaign_ctes(49) + "\nSELECT 1\n")


async def write_batch(conn: Conn, write: BatchWrite, given: CampaignWrite | None = None) -> None:
    """Everything the batch decided, in one statement (arrays through `unnest`), with what
    its campaigns gave (`given`)."""
    if not write.transactions.txn_id:
        return
    balances = sorted(write.balances.items())
    days = sorted(write.days.items())
    upgrades = sorted(write.tiers.items())
    referrals = sorted(write.referrals.items())
    qualifying = sorted(write.qualifying.items())
    extra = [] if given is None else campaign_args(given)
    await conn.execute(
        _WRITE if given is None else _WRITE_WITH_CAMPAIGNS,
        *_transaction_columns(write.transactions),
        *_lot_columns(write.lots),
        *_transfer_columns(write.transfers),
        [m for m, _ in balances],
        [d.pending for _, d in balances],
        [d.available for _, d in balances],
        [d.earned for _, d in balances],
        [k[0] for k, _ in days],
        [k[1] for k, _ in days],
        [n for _, n in days],
        [m for m, _ in upgrades],
        [t.code for _, t in upgrades],
        [t.since for _, t in upgrades],
        [t.review_at for _, t in upgrades],
        [t.grace_until for _, t in upgrades],
        [t.rule_version for _, t in upgrades],
        [d.member_id for _, d in referrals],
        [d.referrer_id for _, d in referrals],
        [d.payment_id for _, d in referrals],
        [d.rule_version for _, d in referrals],
        [k[0] for k, _ in qualifying],
        [k[1] for k, _ in qualifying],
        [n for _, n in qualifying],
        *extra,
    )
