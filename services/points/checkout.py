"""QuoteCheckout: what a payment would cost the member and earn, before it is made: the tier
discount, the member's coupons and the best combination (domain/checkout.py), and the
points on the amount charged (the program's and the running campaigns', if their budgets
last). Two statements; writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.points.domain import checkout, earning, tiers
from services.points.domain.campaign_awards import (
    NO_CAMPAIGNS,
    Allowance,
    Allowances,
    CampaignOutcome,
    PaymentFacts,
    RunningSet,
    award,
    with_campaigns,
)
from services.points.domain.checkout import CheckoutQuote, QuoteRequest
from services.points.domain.coupons import Purchase
from services.points.domain.earning import Earning
from services.points.domain.members import ACTIVE, member_not_active
from services.points.domain.rules import RulesInForce, Tier, UnknownCurrency
from services.points.settlement_campaigns import CampaignBook
from services.points.store import checkout as checkout_store
from services.points.store.checkout import QuoteFacts
from services.runtime.errors import bad_field, not_found

MAX_COUPONS_LOOKED_AT = 200  # a wallet's usable coupons; more are not weighed


class Checkout:
    def __init__(
        self, pool: asyncpg.Pool, rules: RulesInForce, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock
        self._campaigns = CampaignBook()

    async def quote(self, request: QuoteRequest) -> CheckoutQuote:
        """Two statements and no transaction: a quote is a preview, asked at every
        checkout; the settlement decides with what is true then."""
        rules, now = self._rules.rules, self._clock()
        try:
            rules.currency(request.currency)
        except UnknownCurrency as exc:
            raise bad_field("amount.currency_code", "not a currency of the program") from exc
        day = earning.local_day(rules, now)
        async with self._pool.acquire() as conn:
            facts = await checkout_store.quote_facts(conn, request.member_id, day)
            if facts is None:
                raise not_found("member")
            if facts.state != ACTIVE:
                raise member_not_active(facts.state, "cannot pay with the program")
            coupons = await checkout_store.usable_coupons(
                conn, request.member_id, now, MAX_COUPONS_LOOKED_AT
            )
            running = await self._campaigns.running(conn, facts.campaign_epoch)
        if request.codes:
            wanted = set(request.codes)
            coupons = [(c, spec) for c, spec in coupons if c.code in wanted]
        tier = tiers.tier_of(rules, facts.tier)
        purchase = Purchase(
            request.currency, request.amount_minor, request.merchant_id, request.category, tier.code
        )
        quoted = checkout.quote(purchase, tier, coupons, now)
        program, outcome = self._points(request, quoted.charge_minor, tier, facts, running, now)
        return CheckoutQuote(quoted, with_campaigns(program, outcome), outcome)

    def _points(
        self,
        request: QuoteRequest,
        charge_minor: int,
        tier: Tier,
        facts: QuoteFacts,
        running: RunningSet,
        now: datetime,
    ) -> tuple[Earning, CampaignOutcome]:
        """What the payment would earn on the amount charged (nothing when the discounts
        take all of it), the campaigns' as if their budgets last."""
        if charge_minor <= 0:
            return Earning(0, (), earning.BELOW_ONE_POINT), NO_CAMPAIGNS
        rules = self._rules.rules
        program = earning.compute_earning(
            rules,
            request.currency,
            charge_minor,
            request.category,
            tier.earn_multiplier_bps,
            facts.earned_today,
        )
        place = running.at(request.merchant_id, request.category)
        if not place:
            return program, NO_CAMPAIGNS
        day = earning.local_day(rules, now)
        num, den = earning.base_points(rules, request.currency, charge_minor, request.category)
        payment = PaymentFacts(
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
            tier.code,
            facts.registered_at,
            not facts.settled_before,
        )
        unlimited = Allowances(
            {k: Allowance() for r in place for k in r.keys(day)},
            {(request.member_id, r.campaign_id): Allowance() for r in place},
        )
        return program, award(place, payment, unlimited)
