"""CreateCampaign, UpdateCampaign, ActivateCampaign, EndCampaign, GetCampaign, ListCampaigns:
the lifecycle of campaigns (domain/campaigns.py). Every change to what runs raises the
campaign epoch first, which serialises such changes (so the exclusive-overlap and count
checks see each other) and tells settlement batches to reload the running set."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from services.points.domain import campaign_budgets, campaign_simulation, campaigns
from services.points.domain.campaign_awards import TOTAL_PERIOD, PaymentFacts
from services.points.domain.campaign_simulation import Simulation, Simulator
from services.points.domain.campaigns import (
    Campaign,
    CampaignQuery,
    CampaignSpec,
    CampaignState,
    CampaignView,
    campaign_not_found,
)
from services.points.domain.earning import base_points, local_day
from services.points.domain.promotion_terms import PROMOTION_ID
from services.points.domain.rules import RulesInForce, UnknownCurrency
from services.points.store import campaign_budgets as budget_store
from services.points.store import campaigns as store
from services.points.store import coupons as coupon_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import already_exists, bad_field, failed_precondition
from services.runtime.paging import decode_token, encode_token

CAMPAIGN_EXISTS = "CAMPAIGN_EXISTS"


def check_campaign_id(campaign_id: str, field: str = "campaign_id") -> None:
    if not PROMOTION_ID.fullmatch(campaign_id):
        raise bad_field(field, "must match [a-z0-9][a-z0-9-]{0,63}")


async def _check_coupon_template(conn: Conn, spec: CampaignSpec) -> None:
    """A coupon campaign's template must exist and be active when it starts."""
    template_id = spec.effect.coupon_template
    if not template_id:
        return
    template = await coupon_store.get_template(conn, template_id)
    if template is None or not template.active:
        raise failed_precondition(
            "COUPON_TEMPLATE_MISSING", "the campaign's coupon template is missing or retired"
        )


class Campaigns:
    def __init__(
        self, pool: asyncpg.Pool, rules: RulesInForce, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock

    async def create(self, campaign_id: str, spec: CampaignSpec) -> CampaignView:
        check_campaign_id(campaign_id)
        return await in_transaction(self._pool, lambda conn: self._create(conn, campaign_id, spec))

    async def _create(self, conn: Conn, campaign_id: str, spec: CampaignSpec) -> CampaignView:
        now = self._clock()
        existing = await store.get(conn, campaign_id)
        if existing is None:
            campaigns.check_spec(spec, self._rules.rules, now)
            if await store.insert(conn, campaign_id, spec, now):
                return await self._view(conn, campaign_id)
            existing = await store.get(conn, campaign_id)  # a concurrent create won
        if existing is None or existing.spec != spec:
            raise already_exists(CAMPAIGN_EXISTS, "campaign_id names another campaign")
        return await self._view(conn, campaign_id)

    async def update(self, campaign_id: str, spec: CampaignSpec) -> CampaignView:
        check_campaign_id(campaign_id, "campaign.name")
        return await in_transaction(self._pool, lambda conn: self._update(conn, campaign_id, spec))

    async def _update(self, conn: Conn, campaign_id: str, spec: CampaignSpec) -> CampaignView:
        await store.raise_epoch(conn)
        current = await self._locked(conn, campaign_id)
        campaigns.check_editable(current, spec)
        if spec == current.spec:
            return await self._view(conn, campaign_id)
        now = self._clock()
        campaigns.check_spec(spec, self._rules.rules, now)
        if current.state is CampaignState.DRAFT:
            await store.replace_draft(conn, campaign_id, spec, now)
        else:
            campaigns.check_running_set(spec, campaign_id, await store.running(conn))
            await _check_coupon_template(conn, spec)
            await store.add_version(conn, campaign_id, current.version + 1, spec, now)
        return await self._view(conn, campaign_id)

    async def activate(self, campaign_id: str) -> CampaignView:
        check_campaign_id(campaign_id, "name")
        return await in_transaction(self._pool, lambda conn: self._activate(conn, campaign_id))

    async def _activate(self, conn: Conn, campaign_id: str) -> CampaignView:
        await store.raise_epoch(conn)
        current = await self._locked(conn, campaign_id)
        if current.state is CampaignState.ACTIVE:
            return await self._view(conn, campaign_id)
        now = self._clock()
        campaigns.check_activatable(current, now)
        # the program may have changed since the draft was written (tiers, categories)
        campaigns.check_spec(current.spec, self._rules.rules, now)
        campaigns.check_running_set(current.spec, campaign_id, await store.running(conn))
        await _check_coupon_template(conn, current.spec)
        await store.set_state(conn, campaign_id, CampaignState.ACTIVE, now)
        total = current.spec.budget.total
        if total.bounded:
            slices = campaign_budgets.split(total)
            await budget_store.create_slices(conn, campaign_id, TOTAL_PERIOD, slices)
        return await self._view(conn, campaign_id)

    async def end(self, campaign_id: str) -> CampaignView:
        check_campaign_id(campaign_id, "name")
        return await in_transaction(self._pool, lambda conn: self._end(conn, campaign_id))

    async def _end(self, conn: Conn, campaign_id: str) -> CampaignView:
        await store.raise_epoch(conn)
        current = await self._locked(conn, campaign_id)
        if current.state is not CampaignState.ENDED:
            await store.set_state(conn, campaign_id, CampaignState.ENDED, self._clock())
        return await self._view(conn, campaign_id)

    async def get(self, campaign_id: str) -> CampaignView:
        check_campaign_id(campaign_id, "name")
        async with self._pool.acquire() as conn:
            return await self._view(conn, campaign_id)

    async def list_campaigns(
        self, query: CampaignQuery, page_token: str
    ) -> tuple[list[Campaign], str]:
        filters = {
            "states": sorted(s.value for s in query.states),
            "active_at": query.active_at.isoformat() if query.active_at else None,
        }
        position = decode_token(page_token, filters)
        if position is not None:
            after = position.get("after")
            if not isinstance(after, str):
                raise bad_field("page_token", "not a page token of this list")
            query = CampaignQuery(query.states, query.active_at, query.page_size, after)
        async with self._pool.acquire() as conn:
            rows = await store.list_page(conn, query)
        page = rows[: query.page_size]
        token = ""
        if len(rows) > query.page_size:
            token = encode_token({"after": page[-1].campaign_id}, filters)
        return page, token

    async def simulate(
        self,
        campaign_id: str,
        spec: CampaignSpec | None,
        start: datetime | None,
        end: datetime | None,
    ) -> Simulation:
        """SimulateCampaign: `spec` (or the stored campaign's current terms) over the
        payments settled in [start, end), in a read-only snapshot; writes nothing."""
        now = self._clock()
        campaign_simulation.check_period(start, end, now)
        assert start is not None and end is not None  # checked
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            if spec is None:
                check_campaign_id(campaign_id, "name")
                found = await store.get(conn, campaign_id)
                if found is None:
                    raise campaign_not_found()
                spec = found.spec
            else:
                # every term but the window, which the period replaces
                window = replace(spec, start_at=now, end_at=now + timedelta(days=1))
                campaigns.check_spec(window, self._rules.rules, now)
            simulator = Simulator(spec, start, end, now)
            # payments settle at most the program's delay after they occurred
            settled_by = end + timedelta(days=self._rules.rules.settlement_delay_limit_days)
            limit = campaign_simulation.MAX_PAYMENTS + 1
            async for row in store.settled_in(conn, start, end, min(settled_by, now), limit):
                facts = self._facts(row)
                if facts is not None:
                    simulator.add(facts)
        return simulator.result()

    def _facts(self, row: asyncpg.Record) -> PaymentFacts | None:
        """A stored settlement as a campaign reads it (None: its currency is not the
        program's any more)."""
        rules = self._rules.rules
        paid = json.loads(row["payment"])
        occurred = datetime.fromisoformat(paid["occurred_at"])
        try:
            num, den = base_points(
                rules, paid["currency"], int(paid["amount_minor"]), paid["merchant_category"]
            )
        except UnknownCurrency:
            return None
        tier = next(
            (t.code for t in rules.tiers if t.earn_multiplier_bps == row["bps"]),
            rules.base_tier().code,
        )
        return PaymentFacts(
            row["member_id"],
            occurred,
            local_day(rules, occurred),
            paid["currency"],
            int(paid["amount_minor"]),
            str(paid.get("merchant_id", "")),
            paid["merchant_category"],
            str(paid.get("channel", "")),
            num,
            den,
            tier,
            row["registered_at"],
            bool(row["first"]),
        )

    async def _locked(self, conn: Conn, campaign_id: str) -> Campaign:
        found = await store.get(conn, campaign_id, lock=True)
        if found is None:
            raise campaign_not_found()
        return found

    async def _view(self, conn: Conn, campaign_id: str) -> CampaignView:
        found = await store.get(conn, campaign_id)
        if found is None:
            raise campaign_not_found()
        points, awards = await store.given(conn, campaign_id)
        return CampaignView(found, points, awards)
