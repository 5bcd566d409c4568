"""QuoteCheckout: what a payment would cost the member and earn, before it is made: the tier
discount, the member's coupons and the best combination (domain/checkout.py), and the
points on the amount charged (the program's and the running campaigns', if their budgets
last). One read-only snapshot; writes nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from services.points.domain import checkout, earning, tiers
from services.points.domain.campaign_awards import (
    Allowance,
    Allowances,
    CampaignOutcome,
    PaymentFacts,
    award,
    by_priority,
    with_campaigns,
)
from services.points.domain.checkout import CheckoutQuote, QuoteRequest
from services.points.domain.coupons import Coupon, CouponState, Purchase, TemplateSpec
from services.points.domain.earning import Earning
from services.points.domain.members import ACTIVE, member_not_active
from services.points.domain.rules import RulesInForce, UnknownCurrency
from services.points.store import campaigns as campaign_store
from services.points.store import coupons as coupon_store
from services.points.store import ledger as ledger_store
from services.points.store import tiers as tier_store
from services.points.store.settlement_batch import settled_before
from services.runtime.db import Conn
from services.runtime.errors import bad_field, not_found

MAX_COUPONS_LOOKED_AT = 200  # a wallet's usable coupons; more are not weighed


class Checkout:
    def __init__(
        self, pool: asyncpg.Pool, rules: RulesInForce, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock

    async def quote(self, request: QuoteRequest) -> CheckoutQuote:
        now = self._clock()
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await self._quote(conn, request, now)

    async def _quote(self, conn: Conn, request: QuoteRequest, now: datetime) -> CheckoutQuote:
        rules = self._rules.rules
        try:
            rules.currency(request.currency)
        except UnknownCurrency as exc:
            raise bad_field("amount.currency_code", "not a currency of the program") from exc
        member_id = request.member_id
        standing = (await coupon_store.standing(conn, [member_id])).get(member_id)
        if standing is None:
            raise not_found("member")
        if standing.state != ACTIVE:
            raise member_not_active(standing.state, "cannot pay with the program")
        view = (await tier_store.tier_views(conn, [member_id], *tiers.window_days(rules, now)))[
            member_id
        ]
        tier = tiers.tier_of(rules, view.state)
        purchase = Purchase(
            request.currency, request.amount_minor, request.merchant_id, request.category, tier.code
        )
        coupons = await self._coupons(conn, member_id, request.codes)
        quoted = checkout.quote(purchase, tier, coupons, now)
        program, outcome = await self._points(
            conn, request, quoted.charge_minor, tier.code, standing.registered_at, now
        )
        return CheckoutQuote(quoted, with_campaigns(program, outcome), outcome)

    async def _coupons(
        self, conn: Conn, member_id: str, codes: Sequence[str]
    ) -> list[tuple[Coupon, TemplateSpec]]:
        found = await coupon_store.member_coupons(
            conn, member_id, [CouponState.ISSUED.value], None, MAX_COUPONS_LOOKED_AT, self._clock()
        )
        if codes:
            found = [c for c in found if c.code in set(codes)]
        specs: dict[str, TemplateSpec] = {}
        for template_id in {c.template_id for c in found}:
            template = await coupon_store.get_template(conn, template_id)
            if template is not None:
                specs[template_id] = template.spec
        return [(c, specs[c.template_id]) for c in found if c.template_id in specs]

    async def _points(
        self,
        conn: Conn,
        request: QuoteRequest,
        charge_minor: int,
        tier_code: str,
        registered: datetime,
        now: datetime,
    ) -> tuple[Earning, CampaignOutcome]:
        """What the payment would earn on the amount charged (nothing when the discounts
        take all of it)."""
        if charge_minor <= 0:
            return Earning(0, (), earning.BELOW_ONE_POINT), CampaignOutcome(())
        rules = self._rules.rules
        tier = rules.tier(tier_code)
        day = earning.local_day(rules, now)
        earned_today = await ledger_store.earned_on(conn, request.member_id, day)
        program = earning.compute_earning(
            rules,
            request.currency,
            charge_minor,
            request.category,
            tier.earn_multiplier_bps,
            earned_today,
        )
        running = by_priority(await campaign_store.running(conn))
        if not running:
            return program, CampaignOutcome(())
        num, den = earning.base_points(rules, request.currency, charge_minor, request.category)
        first = request.member_id not in await settled_before(conn, [request.member_id])
        facts = PaymentFacts(
            request.member_id,
            now,
            day,
            request.currency,
            charge_minor,
            request.merchant_id,
            request.category,
            request.channel,
            num,
            den,
            tier_code,
            registered,
            first,
        )
        # a preview: every budget as if it lasts
        unlimited = Allowances(
            {k: Allowance() for r in running for k in r.keys(day)},
            {(request.member_id, r.campaign_id): Allowance() for r in running},
        )
        return program, award(running, facts, unlimited)
