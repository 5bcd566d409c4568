"""Coupons: templates (CreateCouponTemplate, GetCouponTemplate, ListCouponTemplates), issue
(IssueCoupons: one member or a list, idempotent per member on the request id), a member's
wallet (ListMemberCoupons), and use at payment (ReserveCoupon, ReleaseCoupon; the payment's
settlement redeems, store/coupons.redeem_cte; a full refund gives it back). The rules are
domain/coupons.py's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from services.points.domain import coupons
from services.points.domain.coupons import (
    COUPON_OUT_OF_STOCK,
    COUPON_PER_MEMBER_LIMIT,
    COUPON_TEMPLATE_RETIRED,
    COUPON_TIER_NOT_ELIGIBLE,
    Coupon,
    CouponState,
    Issued,
    MemberStanding,
    Template,
    TemplateSpec,
)
from services.points.domain.jobs import BatchResult
from services.points.domain.members import ACTIVE, member_not_active
from services.points.domain.promotion_terms import PROMOTION_ID
from services.points.domain.rules import RulesInForce
from services.points.domain.unknown_members import member_unknown
from services.points.store import balance as balance_store
from services.points.store import campaigns as campaign_store
from services.points.store import coupons as store
from services.points.store import ledger as ledger_store
from services.points.store import settlement_batch as batch_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import (
    DomainError,
    already_exists,
    bad_field,
    failed_precondition,
    idempotency_key_reused,
    not_found,
)

TEMPLATE_EXISTS = "COUPON_TEMPLATE_EXISTS"
COUPON_PAYMENT_HAS_ONE = "COUPON_PAYMENT_HAS_ONE"  # at most one coupon per payment
MAX_ISSUE_MEMBERS = 1000
MAX_PAGE = 200


def check_template_id(template_id: str, field: str = "template_id") -> None:
    if not PROMOTION_ID.fullmatch(template_id):
        raise bad_field(field, "must match [a-z0-9][a-z0-9-]{0,63}")


def template_not_found() -> DomainError:
    return not_found("coupon template")


def coupon_not_found() -> DomainError:
    # the same answer for a code of another member as for no code at all: no enumeration
    return not_found("coupon")


COUPON_TEMPLATE_MISSING = "COUPON_TEMPLATE_MISSING"


async def issue_in(
    conn: Conn,
    now: datetime,
    template_id: str,
    member_id: str,
    issue_keys: Sequence[str],
) -> list[Coupon]:
    """A coupon of the template per key to one member whose balance row the caller holds
    locked, inside the caller's transaction (a coupon reward's redemption): every refusal
    (retired, per-member limit, out of stock) raises, so the caller's work rolls back."""
    template = await store.get_template(conn, template_id)
    if template is None:
        raise failed_precondition(
            COUPON_TEMPLATE_MISSING, "the reward's coupon template is missing"
        )
    if not template.active:
        raise failed_precondition(COUPON_TEMPLATE_RETIRED, "the template is retired")
    _, counts = await store.issued_before(conn, [member_id], "", template_id)
    limit = template.spec.per_member_limit
    if limit is not None and counts.get(member_id, 0) + len(issue_keys) > limit:
        raise failed_precondition(
            COUPON_PER_MEMBER_LIMIT, f"a member holds at most {limit} of this template"
        )
    if await store.take_stock(conn, template_id, len(issue_keys)) < len(issue_keys):
        raise failed_precondition(COUPON_OUT_OF_STOCK, "the template's stock is used up")
    valid_from, expires_at = coupons.validity(template.spec, now)
    ids = await ledger_store.next_ids(conn, len(issue_keys))
    made = []
    for key, coupon_id in zip(issue_keys, ids, strict=True):
        coupon = Coupon(
            member_id,
            coupon_id,
            coupons.new_code(),
            template_id,
            CouponState.ISSUED,
            now,
            valid_from,
            expires_at,
        )
        await store.insert_coupons(conn, [coupon], key)
        made.append(coupon)
    return made


async def issue_campaign_coupons(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """The `campaign_coupons` job's batch: the coupons coupon campaigns gave settlements,
    issued (idempotent on `campaign:{campaign}:{payment}`), or refused with the reason
    (the template's stock, limit or state), each in a savepoint."""
    due = await campaign_store.due_coupons(conn, limit)
    if not due:
        return BatchResult(0, 0)
    members = [r["member_id"] for r in due]
    await balance_store.lock_balances(conn, members)
    standing = await store.standing(conn, members)
    done: list[tuple[str, str, str, str | None]] = []
    for row in due:
        key = f"campaign:{row['campaign_id']}:{row['payment_id']}"
        refused = None
        state = standing[row["member_id"]].state if row["member_id"] in standing else None
        try:
            if state != ACTIVE:  # a member closed or erased since gets no coupon
                raise member_not_active(state or "ERASED", "gets no coupons")
            async with conn.transaction():
                await issue_in(conn, now, row["template_id"], row["member_id"], [key])
        except DomainError as err:
            refused = err.reason
        done.append((row["member_id"], row["campaign_id"], row["payment_id"], refused))
    await campaign_store.mark_coupons_done(conn, done, now)
    return BatchResult(len(due), sum(1 for d in done if d[3] is None))


class Coupons:
    def __init__(
        self, pool: asyncpg.Pool, rules: RulesInForce, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock

    def now(self) -> datetime:
        return self._clock()

    # ---- templates ------------------------------------------------------------------------

    async def create_template(self, template_id: str, spec: TemplateSpec) -> Template:
        check_template_id(template_id)
        now = self._clock()
        async with self._pool.acquire() as conn:
            existing = await store.get_template(conn, template_id)
            if existing is None:
                coupons.check_template(spec, self._rules.rules, now)
                template = Template(template_id, spec, spec.stock, True, now)
                if await store.insert_template(conn, template):
                    return template
                existing = await store.get_template(conn, template_id)
        if existing is None or existing.spec != spec:
            raise already_exists(TEMPLATE_EXISTS, "template_id names another template")
        return existing

    async def get_template(self, template_id: str) -> Template:
        check_template_id(template_id, "name")
        async with self._pool.acquire() as conn:
            found = await store.get_template(conn, template_id)
        if found is None:
            raise template_not_found()
        return found

    async def list_templates(self, after: str, page_size: int) -> list[Template]:
        async with self._pool.acquire() as conn:
            return await store.list_templates(conn, after, min(page_size, MAX_PAGE) + 1)

    # ---- issue ----------------------------------------------------------------------------

    async def issue(
        self, template_id: str, member_ids: Sequence[str], request_id: str
    ) -> list[Issued]:
        check_template_id(template_id, "template")
        if not 1 <= len(member_ids) <= MAX_ISSUE_MEMBERS:
            raise bad_field("members", f"1..{MAX_ISSUE_MEMBERS} members per call")
        if len(set(member_ids)) != len(member_ids):
            raise bad_field("members", "lists a member twice")
        return await in_transaction(
            self._pool, lambda conn: self._issue(conn, template_id, list(member_ids), request_id)
        )

    async def _issue(
        self, conn: Conn, template_id: str, member_ids: list[str], request_id: str
    ) -> list[Issued]:
        template = await store.get_template(conn, template_id)
        if template is None:
            raise template_not_found()
        floor = self._rules.rules.available_floor
        known = await batch_store.lock_known_members(conn, sorted(member_ids), floor)
        standing = await store.standing(conn, list(known))
        earlier, counts = await store.issued_before(conn, list(known), request_id, template_id)
        answers: dict[str, Issued] = {}
        wanting: list[str] = []
        for member_id in member_ids:
            answer = self._refusal(template, member_id, known, standing, earlier, counts)
            if answer is None:
                wanting.append(member_id)
            else:
                answers[member_id] = answer
        granted = await store.take_stock(conn, template_id, len(wanting)) if wanting else 0
        new = await self._new_coupons(conn, template, wanting[:granted])
        await store.insert_coupons(conn, new, request_id)
        for coupon in new:
            answers[coupon.member_id] = Issued(coupon.member_id, coupon, None)
        for member_id in wanting[granted:]:
            out = failed_precondition(COUPON_OUT_OF_STOCK, "the template's stock is used up")
            answers[member_id] = Issued(member_id, None, out)
        return [answers[m] for m in member_ids]

    def _refusal(
        self,
        template: Template,
        member_id: str,
        known: dict[str, int],
        standing: dict[str, MemberStanding],
        earlier: dict[str, Coupon],
        counts: dict[str, int],
    ) -> Issued | None:
        """The answer of a member that gets no new coupon (None: it gets one)."""
        if member_id in earlier:
            if earlier[member_id].template_id != template.template_id:
                return Issued(member_id, None, idempotency_key_reused("request_id"))
            return Issued(member_id, earlier[member_id], None, repeat=True)
        error: DomainError | None = None
        if member_id not in known:
            error = member_unknown()
        elif standing[member_id][0] != ACTIVE:
            error = member_not_active(standing[member_id][0], "gets no coupons")
        elif not template.active:
            error = failed_precondition(COUPON_TEMPLATE_RETIRED, "the template is retired")
        elif (limit := template.spec.per_member_limit) and counts.get(member_id, 0) >= limit:
            error = failed_precondition(
                COUPON_PER_MEMBER_LIMIT, f"a member holds at most {limit} of this template"
            )
        return None if error is None else Issued(member_id, None, error)

    async def _new_coupons(
        self, conn: Conn, template: Template, member_ids: Sequence[str]
    ) -> list[Coupon]:
        if not member_ids:
            return []
        now = self._clock()
        valid_from, expires_at = coupons.validity(template.spec, now)
        ids = await ledger_store.next_ids(conn, len(member_ids))
        return [
            Coupon(
                member_id,
                coupon_id,
                coupons.new_code(),
                template.template_id,
                CouponState.ISSUED,
                now,
                valid_from,
                expires_at,
            )
            for member_id, coupon_id in zip(member_ids, ids, strict=True)
        ]

    # ---- a member's wallet and use at payment ---------------------------------------------

    async def member_coupons(
        self,
        member_id: str,
        states: Sequence[CouponState],
        after: tuple[datetime, int] | None,
        page_size: int,
    ) -> list[Coupon]:
        async with self._pool.acquire() as conn:
            return await store.member_coupons(
                conn,
                member_id,
                [s.value for s in states],
                after,
                min(page_size, MAX_PAGE) + 1,
                self._clock(),
            )

    async def reserve(self, member_id: str, code: str, payment_id: str) -> Coupon:
        return await in_transaction(
            self._pool, lambda conn: self._reserve(conn, member_id, code, payment_id)
        )

    async def _reserve(self, conn: Conn, member_id: str, code: str, payment_id: str) -> Coupon:
        coupon = await self._locked(conn, member_id, code)
        now = self._clock()
        shown = coupon.shown_state(now)
        if shown is CouponState.RESERVED and coupon.reserved_payment_id == payment_id:
            return coupon  # a repeat of this reservation, still held
        refusal = coupons.refusal_to_reserve(coupon, now)
        if refusal is not None:
            raise refusal
        if await store.payment_has_coupon(conn, member_id, payment_id, coupon.coupon_id):
            raise failed_precondition(
                COUPON_PAYMENT_HAS_ONE, "another coupon is reserved for this payment"
            )
        state, tier, _ = (await store.standing(conn, [member_id]))[member_id]
        if state != ACTIVE:
            raise member_not_active(state, "cannot use coupons")
        template = await store.get_template(conn, coupon.template_id)
        tiers = () if template is None else template.spec.tiers
        if tiers and (tier or self._rules.rules.base_tier().code) not in tiers:
            raise failed_precondition(COUPON_TIER_NOT_ELIGIBLE, "not for the member's tier")
        until = now + timedelta(seconds=self._rules.rules.hold_ttl_s)
        await store.set_reservation(conn, coupon, CouponState.RESERVED, payment_id, until)
        return replace(
            coupon, state=CouponState.RESERVED, reserved_payment_id=payment_id, reserved_until=until
        )

    async def release(self, member_id: str, code: str, payment_id: str) -> Coupon:
        return await in_transaction(
            self._pool, lambda conn: self._release(conn, member_id, code, payment_id)
        )

    async def _release(self, conn: Conn, member_id: str, code: str, payment_id: str) -> Coupon:
        coupon = await self._locked(conn, member_id, code)
        if coupon.shown_state(self._clock()) is not CouponState.RESERVED:
            return coupon  # nothing held (released, lapsed, used): answered as it is
        if coupon.reserved_payment_id != payment_id:
            raise failed_precondition(
                coupons.COUPON_RESERVED, "the coupon is reserved for another payment"
            )
        await store.set_reservation(conn, coupon, CouponState.ISSUED, None, None)
        return replace(
            coupon, state=CouponState.ISSUED, reserved_payment_id=None, reserved_until=None
        )

    async def revoke(self, member_id: str, code: str) -> Coupon:
        return await in_transaction(self._pool, lambda conn: self._revoke(conn, member_id, code))

    async def _revoke(self, conn: Conn, member_id: str, code: str) -> Coupon:
        coupon = await self._locked(conn, member_id, code)
        state = coupon.shown_state(self._clock())
        if state is CouponState.REVOKED:
            return coupon
        if state is CouponState.REDEEMED:
            raise failed_precondition(coupons.COUPON_USED, "the coupon was used")
        if state is CouponState.EXPIRED:
            raise failed_precondition(coupons.COUPON_EXPIRED, "the coupon has expired")
        await store.set_reservation(conn, coupon, CouponState.REVOKED, None, None)
        return replace(
            coupon, state=CouponState.REVOKED, reserved_payment_id=None, reserved_until=None
        )

    async def _locked(self, conn: Conn, member_id: str, code: str) -> Coupon:
        floor = self._rules.rules.available_floor
        if not await batch_store.lock_known_members(conn, [member_id], floor):
            raise coupon_not_found()
        coupon = await store.lock_by_code(conn, member_id, code)
        if coupon is None:
            raise coupon_not_found()
        return coupon
