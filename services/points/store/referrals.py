"""SQL of referral bonuses: recorded as due by a referee's first settlement, paid by the
`referral_bonus` job (services/points/referrals.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.points.domain.referrals import DueReferral, PaidReferral
from services.runtime.db import Conn

_COLUMNS = "member_id, referrer_id, payment_id, rule_version"


def _due(rows: Sequence[asyncpg.Record]) -> list[DueReferral]:
    return [
        DueReferral(r["member_id"], r["referrer_id"], r["payment_id"], int(r["rule_version"]))
        for r in rows
    ]


async def due_candidates(conn: Conn, limit: int) -> list[DueReferral]:
    """Candidates only: read again, locked, once the members' balances are."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM points.referral_bonuses WHERE state = 'DUE'"
        " ORDER BY created_at, member_id LIMIT $1",
        limit,
    )
    return _due(rows)


async def lock_due(conn: Conn, member_ids: Sequence[str]) -> list[DueReferral]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM points.referral_bonuses"
        " WHERE member_id = ANY($1::text[]) AND state = 'DUE' ORDER BY member_id FOR UPDATE",
        list(member_ids),
    )
    return _due(rows)


async def mark_paid(conn: Conn, paid: Sequence[PaidReferral], now: datetime) -> None:
    await conn.execute(
        "UPDATE points.referral_bonuses r SET state = 'PAID', paid_at = $4,"
        " referee_points = p.referee, referrer_points = p.referrer"
        " FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS p(member_id, referee, referrer)"
        " WHERE r.member_id = p.member_id",
        [p.member_id for p in paid],
        [p.referee_points for p in paid],
        [p.referrer_points for p in paid],
        now,
    )
