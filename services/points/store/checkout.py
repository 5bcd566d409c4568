"""SQL of QuoteCheckout: what it reads of the member, and the member's usable coupons with
their templates, in two statements (a quote is asked at every checkout)."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import NamedTuple

import asyncpg

from services.points.domain.coupons import Coupon, CouponState, TemplateSpec, template_of
from services.points.domain.tiers import TierState
from services.points.store.members import EFFECTIVE_STATE
from services.points.store.settlement_batch import SETTLED_BEFORE
from services.points.store.tiers import TIER_COLUMNS, state_of
from services.runtime.db import Conn

_SPECS_KEPT = 1024  # parsed template terms, by their stored text
_specs: dict[str, TemplateSpec] = {}


class QuoteFacts(NamedTuple):
    state: str
    registered_at: datetime
    tier: TierState | None
    earned_today: int
    settled_before: bool
    campaign_epoch: int


_FACTS = f"""
SELECT {EFFECTIVE_STATE} AS state, m.registered_at, {TIER_COLUMNS},
  coalesce((SELECT d.points FROM points.daily_earnings d
            WHERE d.member_id = m.member_id AND d.day = $2), 0) AS earned_today,
  {SETTLED_BEFORE} AS settled_before,
  (SELECT epoch FROM points.campaign_epoch WHERE one) AS campaign_epoch
FROM points.members m LEFT JOIN points.member_tiers mt ON mt.member_id = m.member_id
WHERE m.member_id = $1
"""


async def quote_facts(conn: Conn, member_id: str, day: date) -> QuoteFacts | None:
    row = await conn.fetchrow(_FACTS, member_id, day)
    if row is None:
        return None
    return QuoteFacts(
        row["state"],
        row["registered_at"],
        state_of(row),
        int(row["earned_today"]),
        bool(row["settled_before"]),
        int(row["campaign_epoch"]),
    )


def _spec(text: str) -> TemplateSpec:
    found = _specs.get(text)
    if found is None:
        if len(_specs) >= _SPECS_KEPT:
            _specs.clear()
        found = _specs[text] = template_of(json.loads(text))
    return found


async def usable_coupons(
    conn: Conn, member_id: str, now: datetime, limit: int
) -> list[tuple[Coupon, TemplateSpec]]:
    """The member's ISSUED coupons still valid at `now` whose template is active, soonest
    expiring first, with their templates' terms."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT c.member_id, c.coupon_id, c.code, c.template_id, c.issued_at, c.valid_from,"
        " c.expires_at, t.spec::text AS spec FROM points.coupons c"
        " JOIN points.coupon_templates t ON t.template_id = c.template_id"
        " WHERE c.member_id = $1 AND c.state = 'ISSUED' AND c.expires_at > $2 AND t.active"
        " ORDER BY c.expires_at, c.coupon_id LIMIT $3",
        member_id,
        now,
        limit,
    )
    return [
        (
            Coupon(
                r["member_id"],
                int(r["coupon_id"]),
                r["code"],
                r["template_id"],
                CouponState.ISSUED,
                r["issued_at"],
                r["valid_from"],
                r["expires_at"],
            ),
            _spec(r["spec"]),
        )
        for r in rows
    ]
