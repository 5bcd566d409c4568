"""SQL of coupons: templates (points.coupon_templates, a small table whose stock is taken by
a conditional UPDATE) and members' coupons (points.coupons, member-scoped).

Lock order: the members' balance rows (store/settlement_batch.lock_known_members), then the
members' coupons, then the template's row last (its stock UPDATE is the only lock on a row
shared by every member, held for as little as the commit)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.points.domain.coupons import (
    Coupon,
    CouponState,
    MemberStanding,
    Template,
    template_of,
)
from services.points.store.members import EFFECTIVE_STATE
from services.runtime.db import Conn

_TEMPLATE = "template_id, spec::text AS spec, stock_left, active, created_at"
_COUPON = (
    "member_id, coupon_id, code, template_id, state, issued_at, valid_from, expires_at,"
    " reserved_payment_id, reserved_until, redeemed_payment_id"
)


def _template(r: asyncpg.Record) -> Template:
    return Template(
        r["template_id"],
        template_of(json.loads(r["spec"])),
        None if r["stock_left"] is None else int(r["stock_left"]),
        bool(r["active"]),
        r["created_at"],
    )


def _coupon(r: asyncpg.Record) -> Coupon:
    return Coupon(
        r["member_id"],
        int(r["coupon_id"]),
        r["code"],
        r["template_id"],
        CouponState(r["state"]),
        r["issued_at"],
        r["valid_from"],
        r["expires_at"],
        r["reserved_payment_id"],
        r["reserved_until"],
        r["redeemed_payment_id"],
    )


async def insert_template(conn: Conn, template: Template) -> bool:
    """False: the id exists."""
    doc = json.dumps(template.spec_document(), sort_keys=True, ensure_ascii=False)
    created = await conn.fetchval(
        "INSERT INTO points.coupon_templates (template_id, spec, stock_left, created_at,"
        " updated_at) VALUES ($1, $2::jsonb, $3, $4, $4)"
        " ON CONFLICT (template_id) DO NOTHING RETURNING true",
        template.template_id,
        doc,
        template.spec.stock,
        template.created_at,
    )
    return bool(created)


async def get_template(conn: Conn, template_id: str) -> Template | None:
    row = await conn.fetchrow(
        f"SELECT {_TEMPLATE} FROM points.coupon_templates WHERE template_id = $1", template_id
    )
    return None if row is None else _template(row)


async def list_templates(conn: Conn, after: str, limit: int) -> list[Template]:
    rows = await conn.fetch(
        f"SELECT {_TEMPLATE} FROM points.coupon_templates WHERE template_id > $1"
        " ORDER BY template_id LIMIT $2",
        after,
        limit,
    )
    return [_template(r) for r in rows]


async def take_stock(conn: Conn, template_id: str, wanted: int) -> int:
    """Takes up to `wanted` from the template's stock; returns how many it took (all of
    them when the stock is unlimited)."""
    taken = await conn.fetchval(
        "WITH t AS (SELECT template_id, stock_left FROM points.coupon_templates"
        "  WHERE template_id = $1 FOR UPDATE)"
        " UPDATE points.coupon_templates c"
        " SET stock_left = c.stock_left - LEAST(c.stock_left, $2), updated_at = now()"
        " FROM t WHERE c.template_id = t.template_id"
        " RETURNING CASE WHEN t.stock_left IS NULL THEN $2 ELSE LEAST(t.stock_left, $2) END",
        template_id,
        wanted,
    )
    return int(taken or 0)


async def standing(conn: Conn, member_ids: Sequence[str]) -> dict[str, MemberStanding]:
    """Each member's state, tier code and registration (under their locks, if taken)."""
    rows = await conn.fetch(
        f"SELECT m.member_id, {EFFECTIVE_STATE} AS state, mt.tier_code, m.registered_at"
        " FROM points.members m"
        " LEFT JOIN points.member_tiers mt ON mt.member_id = m.member_id"
        " WHERE m.member_id = ANY($1::text[])",
        list(member_ids),
    )
    return {
        r["member_id"]: MemberStanding(r["state"], r["tier_code"], r["registered_at"]) for r in rows
    }


async def issued_before(
    conn: Conn, member_ids: Sequence[str], issue_key: str, template_id: str
) -> tuple[dict[str, Coupon], dict[str, int]]:
    """The coupons already issued under `issue_key` to each member, and how many of the
    template each member holds (any state: the per-member limit counts every issue)."""
    rows = await conn.fetch(
        f"SELECT {_COUPON} FROM points.coupons"
        " WHERE member_id = ANY($1::text[]) AND issue_key = $2",
        list(member_ids),
        issue_key,
    )
    counted = await conn.fetch(
        "SELECT member_id, count(*) AS n FROM points.coupons"
        " WHERE member_id = ANY($1::text[]) AND template_id = $2 GROUP BY member_id",
        list(member_ids),
        template_id,
    )
    earlier = {r["member_id"]: _coupon(r) for r in rows}
    return earlier, {r["member_id"]: int(r["n"]) for r in counted}


async def insert_coupons(conn: Conn, coupons: Sequence[Coupon], issue_key: str) -> None:
    if not coupons:
        return
    await conn.execute(
        "INSERT INTO points.coupons (member_id, coupon_id, code, template_id, state, issue_key,"
        " issued_at, valid_from, expires_at)"
        " SELECT c.m, c.id, c.code, c.t, 'ISSUED', $6, c.at, c.f, c.x"
        " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],"
        " $7::timestamptz[], $8::timestamptz[]) AS c(m, id, code, t, at, f, x)",
        [c.member_id for c in coupons],
        [c.coupon_id for c in coupons],
        [c.code for c in coupons],
        [c.template_id for c in coupons],
        [c.issued_at for c in coupons],
        issue_key,
        [c.valid_from for c in coupons],
        [c.expires_at for c in coupons],
    )


# the state as of $6: a lapse the jobs have not written yet counts (domain Coupon.shown_state)
_STATE_NOW = (
    "CASE WHEN state IN ('ISSUED', 'RESERVED') AND expires_at <= $6 THEN 'EXPIRED'"
    " WHEN state = 'RESERVED' AND reserved_until <= $6 THEN 'ISSUED' ELSE state END"
)


async def member_coupons(
    conn: Conn,
    member_id: str,
    states: Sequence[str],
    after: tuple[datetime, int] | None,
    limit: int,
    now: datetime,
) -> list[Coupon]:
    """Soonest-expiring first, in `states` as of `now` (all when empty); `after`: the
    (expires_at, coupon_id) a page ended at."""
    rows = await conn.fetch(
        f"SELECT {_COUPON} FROM points.coupons WHERE member_id = $1"
        f" AND (cardinality($2::text[]) = 0 OR {_STATE_NOW} = ANY($2::text[]))"
        " AND ($3::timestamptz IS NULL OR (expires_at, coupon_id) > ($3, $4))"
        " ORDER BY expires_at, coupon_id LIMIT $5",
        member_id,
        list(states),
        None if after is None else after[0],
        0 if after is None else after[1],
        limit,
        now,
    )
    return [_coupon(r) for r in rows]


async def lock_by_code(conn: Conn, member_id: str, code: str) -> Coupon | None:
    row = await conn.fetchrow(
        f"SELECT {_COUPON} FROM points.coupons WHERE member_id = $1 AND code = $2 FOR UPDATE",
        member_id,
        code,
    )
    return None if row is None else _coupon(row)


async def payment_has_coupon(conn: Conn, member_id: str, payment_id: str, other_than: int) -> bool:
    """Whether another of the member's coupons is held for the payment (reserved, or a
    lapsed reservation its settlement would still redeem)."""
    found = await conn.fetchval(
        "SELECT true FROM points.coupons WHERE member_id = $1 AND reserved_payment_id = $2"
        " AND state IN ('RESERVED', 'ISSUED') AND coupon_id <> $3 LIMIT 1",
        member_id,
        payment_id,
        other_than,
    )
    return bool(found)


async def set_reservation(
    conn: Conn,
    coupon: Coupon,
    state: CouponState,
    payment_id: str | None,
    until: datetime | None,
) -> None:
    await conn.execute(
        "UPDATE points.coupons SET state = $3, reserved_payment_id = $4, reserved_until = $5"
        " WHERE member_id = $1 AND coupon_id = $2",
        coupon.member_id,
        coupon.coupon_id,
        state.value,
        payment_id,
        until,
    )


def redeem_cte(members: int, keys: int) -> str:
    """The CTE of a settlement batch's statement that redeems the coupons reserved for its
    payments (`$members`: the transactions' member ids, `$keys`: their idempotency keys,
    `payment:<payment_id>`). A reservation that lapsed (ISSUED again, its payment kept)
    is redeemed too: the payment was made with it."""
    return (
        "coupons AS (UPDATE points.coupons c SET state = 'REDEEMED',"
        " redeemed_payment_id = c.reserved_payment_id, redeemed_at = now(),"
        " reserved_until = NULL"
        f" FROM unnest(${members}::text[], ${keys}::text[]) AS k(m, key)"
        " WHERE c.member_id = k.m AND c.reserved_payment_id = substr(k.key, 9)"
        " AND c.reserved_payment_id IS NOT NULL AND c.state IN ('RESERVED', 'ISSUED'))"
    )


async def redeem_for_payment(conn: Conn, member_id: str, payment_id: str) -> None:
    """As `redeem_cte`, for one settlement (the one-by-one path's)."""
    await conn.execute(
        "WITH " + redeem_cte(1, 2) + " SELECT 1", [member_id], [f"payment:{payment_id}"]
    )


async def restore_for_refund(conn: Conn, member_id: str, payment_id: str, now: datetime) -> int:
    """A fully refunded payment gives back the coupon it redeemed, if still valid."""
    restored = await conn.fetch(
        "UPDATE points.coupons SET state = 'ISSUED', redeemed_payment_id = NULL,"
        " redeemed_at = NULL, reserved_payment_id = NULL"
        " WHERE member_id = $1 AND redeemed_payment_id = $2 AND state = 'REDEEMED'"
        " AND expires_at > $3 RETURNING coupon_id",
        member_id,
        payment_id,
        now,
    )
    return len(restored)


async def expire_due(conn: Conn, now: datetime, limit: int) -> tuple[int, int]:
    """At most `limit` coupons past their end become EXPIRED, and at most `limit`
    reservations past theirs end (ISSUED again, the payment kept); (seen, changed)."""
    ended = await conn.fetch(
        "UPDATE points.coupons c SET state = 'EXPIRED', reserved_until = NULL FROM ("
        "  SELECT member_id, coupon_id FROM points.coupons"
        "  WHERE state IN ('ISSUED', 'RESERVED') AND expires_at <= $1"
        "  ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) d"
        " WHERE c.member_id = d.member_id AND c.coupon_id = d.coupon_id RETURNING 1",
        now,
        limit,
    )
    lapsed = await conn.fetch(
        "UPDATE points.coupons c SET state = 'ISSUED', reserved_until = NULL FROM ("
        "  SELECT member_id, coupon_id FROM points.coupons"
        "  WHERE state = 'RESERVED' AND reserved_until <= $1"
        "  ORDER BY reserved_until LIMIT $2 FOR UPDATE SKIP LOCKED) d"
        " WHERE c.member_id = d.member_id AND c.coupon_id = d.coupon_id RETURNING 1",
        now,
        limit,
    )
    seen = max(len(ended), len(lapsed))
    return seen, len(ended) + len(lapsed)


async def expiring_soonest(conn: Conn, member_id: str, now: datetime, count: int) -> list[Coupon]:
    """The member's usable coupons (ISSUED or RESERVED, not past their end) that expire
    soonest: the balance's "expiring soon"."""
    rows = await conn.fetch(
        f"SELECT {_COUPON} FROM points.coupons WHERE member_id = $1"
        " AND state IN ('ISSUED', 'RESERVED') AND expires_at > $2"
        " ORDER BY expires_at, coupon_id LIMIT $3",
        member_id,
        now,
        count,
    )
    return [_coupon(r) for r in rows]
