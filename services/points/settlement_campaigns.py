"""Campaigns inside a settlement batch: which run (reloaded when the epoch moved), the
budgets the batch may draw on, and what it gave (domain/campaign_awards.py decides).

A batch with budgeted campaigns first works out the most its payments could draw on each
shared budget, then takes that from a few free budget slices (FOR UPDATE SKIP LOCKED, in a
savepoint). When the free slices fall short (a budget near its end, or one held by other
batches), it rolls the savepoint back and locks every non-empty slice of those budgets in
one order, waiting for their holders. A holder of free slices never waits for a slice, and
waiters lock in one order, so there is no deadlock cycle. The batch writes what it gave out
of the slices it holds, in its own transaction: no budget is overspent, and concurrent
batches update different rows (docs/decisions/points.md "Campaign budgets without a hot
row").
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from services.points.domain import campaign_budgets
from services.points.domain.campaign_awards import (
    TOTAL_PERIOD,
    Allowance,
    Allowances,
    BudgetKey,
    CampaignOutcome,
    MemberKey,
    PaymentFacts,
    award,
    budget_keys,
    by_priority,
    demand,
    member_allowance,
)
from services.points.domain.campaign_budgets import Slice, SliceSpend
from services.points.domain.campaigns import Campaign
from services.points.domain.earning import base_points
from services.points.domain.rules import Rules, UnknownCurrency
from services.points.domain.settlement import Payment
from services.points.store import campaign_budgets as budget_store
from services.points.store import campaigns as campaign_store
from services.runtime.db import Conn


class CampaignBook:
    """The running campaigns in priority order, as of the epoch a batch last read."""

    def __init__(self) -> None:
        self._epoch = -1
        self._running: tuple[Campaign, ...] = ()

    @property
    def needs_first_payment(self) -> bool:
        return any(c.spec.audience.first_payment for c in self._running)

    async def running(self, conn: Conn, epoch: int) -> tuple[Campaign, ...]:
        if epoch != self._epoch:
            self._running = by_priority(await campaign_store.running(conn))
            self._epoch = epoch
        return self._running


@dataclass(frozen=True)
class MemberFacts:
    tier: str
    registered_at: datetime | None
    settled_before: bool | None  # None: not read (no running campaign asked)


def facts_of(
    rules: Rules, payment: Payment, day: date, member: MemberFacts, first_payment: bool
) -> PaymentFacts | None:
    """None when the payment's currency has no earn rate (the item fails on its own)."""
    try:
        base = base_points(rules, payment.currency, payment.amount_minor, payment.category)
    except UnknownCurrency:
        return None
    return PaymentFacts(
        payment.member_id,
        payment.occurred_at,
        day,
        payment.currency,
        payment.amount_minor,
        payment.merchant_id,
        payment.category,
        payment.channel,
        base,
        member.tier,
        member.registered_at,
        first_payment,
    )


@dataclass
class BatchCampaigns:
    """A batch's running campaigns, the budgets it holds and what it gave."""

    running: tuple[Campaign, ...]
    allowances: Allowances
    held: dict[BudgetKey, list[Slice]] = field(default_factory=dict)
    given: list[tuple[Payment, int, date, CampaignOutcome]] = field(default_factory=list)
    # members whose payment in this batch was settled already: later ones are not "first"
    settled_in_batch: set[str] = field(default_factory=set)

    def decide(self, facts: PaymentFacts | None) -> CampaignOutcome | None:
        if facts is None:
            return None
        return award(self.running, facts, self.allowances)

    def record(self, payment: Payment, txn_id: int, day: date, outcome: CampaignOutcome) -> None:
        if outcome.awards:
            self.given.append((payment, txn_id, day, outcome))

    async def finish(self, conn: Conn) -> None:
        """Writes what the batch's settlements got (only those that were written)."""
        if not self.given:
            return
        by_id = {c.campaign_id: c for c in self.running}
        rows: list[campaign_store.AwardRow] = []
        usage: dict[MemberKey, list[int]] = {}
        spent: dict[BudgetKey, list[int]] = {}
        for payment, txn_id, day, outcome in self.given:
            for a in outcome.awards:
                rows.append(
                    (
                        payment.member_id,
                        txn_id,
                        a.campaign_id,
                        a.version,
                        a.points,
                        a.tier_qualifying,
                        payment.occurred_at,
                    )
                )
                campaign = by_id[a.campaign_id]
                if campaign.spec.budget.per_member.bounded:
                    used = usage.setdefault((payment.member_id, a.campaign_id), [0, 0])
                    used[0] += a.points
                    used[1] += 1
                for key in budget_keys(campaign, day):
                    total = spent.setdefault(key, [0, 0])
                    total[0] += a.points
                    total[1] += 1
        slices: list[tuple[BudgetKey, SliceSpend]] = []
        for key, (points, awards) in sorted(spent.items()):
            slices += [(key, s) for s in campaign_budgets.spend(self.held[key], points, awards)]
        await campaign_store.record_awards(
            conn, rows, [(k, p, a) for k, (p, a) in sorted(usage.items())], slices
        )


async def prepare(
    conn: Conn,
    running: tuple[Campaign, ...],
    candidates: Sequence[PaymentFacts],
    member_ids: Sequence[str],
) -> BatchCampaigns:
    """The budgets the batch may draw on: shared ones claimed from slices, each member's
    read under the member's lock (which the batch holds)."""
    wanted: dict[BudgetKey, Allowance] = {}
    for facts in candidates:
        demand(running, facts, wanted)
    held = await _claim(conn, running, wanted) if wanted else {}
    members = await _member_allowances(conn, running, member_ids)
    allowances = Allowances({k: campaign_budgets.held(v) for k, v in held.items()}, members)
    return BatchCampaigns(running, allowances, held)


async def _claim(
    conn: Conn, running: tuple[Campaign, ...], wanted: dict[BudgetKey, Allowance]
) -> dict[BudgetKey, list[Slice]]:
    by_id = {c.campaign_id: c for c in running}
    for key in sorted(wanted):
        if key[1] != TOTAL_PERIOD:  # a day's slices are cut when the day is first needed
            limit = by_id[key[0]].spec.budget.per_day
            await budget_store.create_slices(conn, key[0], key[1], campaign_budgets.split(limit))
    held: dict[BudgetKey, list[Slice]] = {}
    savepoint = conn.transaction()
    await savepoint.start()
    short = []
    start = secrets.randbelow(campaign_budgets.SLICES)  # batches start at different slices
    for key in sorted(wanted):
        free = await budget_store.claim_free(
            conn, key, start, campaign_budgets.FREE_SLICES_PER_CLAIM
        )
        held[key] = free
        if not campaign_budgets.covers(campaign_budgets.held(free), wanted[key]):
            short.append(key)
    if not short:
        await savepoint.commit()
        return held
    # fall back: release what was taken, then wait for every slice in one order
    await savepoint.rollback()
    return {key: await budget_store.claim_all(conn, key) for key in sorted(wanted)}


async def _member_allowances(
    conn: Conn, running: tuple[Campaign, ...], member_ids: Sequence[str]
) -> dict[MemberKey, Allowance]:
    limited = [c for c in running if c.spec.budget.per_member.bounded]
    if not limited or not member_ids:
        return {}
    used = await budget_store.member_usage(conn, member_ids, [c.campaign_id for c in limited])
    allowances = {}
    for member_id in member_ids:
        for campaign in limited:
            points, awards = used.get((member_id, campaign.campaign_id), (0, 0))
            allowances[(member_id, campaign.campaign_id)] = member_allowance(
                campaign.spec.budget.per_member, points, awards
            )
    return allowances
