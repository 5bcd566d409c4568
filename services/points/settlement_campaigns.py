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
from typing import Any

from services.points.domain import campaign_budgets
from services.points.domain.campaign_awards import (
    TOTAL_PERIOD,
    Allowance,
    Allowances,
    BudgetKey,
    CampaignOutcome,
    MemberKey,
    PaymentFacts,
    Running,
    RunningSet,
    award,
    by_priority,
    demand,
    member_allowance,
)
from services.points.domain.campaign_budgets import CampaignWrite, Slice, SliceSpend
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
        self._running = RunningSet(())

    @property
    def needs_first_payment(self) -> bool:
        return self._running.first_payment

    @property
    def member_budgets(self) -> tuple[str, ...]:
        """The running campaigns with a per-member budget (the batch reads their usage with
        its locked read)."""
        return tuple(r.campaign_id for r in self._running.all if r.member_budget)

    async def running(self, conn: Conn, epoch: int) -> RunningSet:
        if epoch != self._epoch:
            self._running = RunningSet(by_priority(await campaign_store.running(conn)))
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
        num, den = base_points(rules, payment.currency, payment.amount_minor, payment.category)
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
        num,
        den,
        member.tier,
        member.registered_at,
        first_payment,
    )


@dataclass
class BatchCampaigns:
    """A batch's running campaigns, the budgets it holds and what it gave."""

    running: RunningSet
    allowances: Allowances
    held: dict[BudgetKey, list[Slice]] = field(default_factory=dict)
    given: list[tuple[str, str, date, CampaignOutcome]] = field(default_factory=list)
    # members whose payment in this batch was settled already: later ones are not "first"
    settled_in_batch: set[str] = field(default_factory=set)
    # what the campaigns read of each payment a campaign can reach, by (member, key)
    facts: dict[tuple[str, str], PaymentFacts] = field(default_factory=dict)
    # the results slice this batch adds to, for every campaign and every flush: one lock
    # per campaign's results, taken in campaign order (no cycle with another batch)
    results_slice: int = field(default_factory=lambda: secrets.randbelow(campaign_budgets.SLICES))

    def decide(self, candidates: tuple[Running, ...], facts: PaymentFacts) -> CampaignOutcome:
        """What `candidates` (the running campaigns that can reach the payment's place)
        give it."""
        return award(candidates, facts, self.allowances)

    def record(self, member_id: str, payment_id: str, day: date, outcome: CampaignOutcome) -> None:
        if outcome.awards:
            self.given.append((member_id, payment_id, day, outcome))

    def flush(self) -> CampaignWrite | None:
        """What the settlements recorded so far got, as rows to write (with the batch's
        statement, or on their own after the one-by-one path); takes it from the slices
        held, so that a second flush writes only what came after."""
        if not self.given:
            return None
        by_id = {r.campaign_id: r for r in self.running.all}
        usage: dict[MemberKey, list[int]] = {}
        spent: dict[BudgetKey, list[int]] = {}
        results: dict[str, list[int]] = {}
        coupons: list[tuple[str, str, str, str]] = []
        for member_id, payment_id, day, outcome in self.given:
            for a in outcome.awards:
                if a.coupon_template:
                    coupons.append((member_id, a.campaign_id, payment_id, a.coupon_template))
                _add(results, a.campaign_id, a.points)
                running = by_id[a.campaign_id]
                if running.member_budget:
                    _add(usage, (member_id, a.campaign_id), a.points)
                if running.total_budget or running.daily_budget:
                    for key in running.keys(day):
                        _add(spent, key, a.points)
        self.given = []
        slices: list[tuple[BudgetKey, SliceSpend]] = []
        for key, (points, count) in sorted(spent.items()):
            out = campaign_budgets.spend(self.held[key], points, count)
            self.held[key] = campaign_budgets.taken(self.held[key], out)
            slices += [(key, s) for s in out]
        return CampaignWrite(
            [(c, self.results_slice, p, n) for c, (p, n) in sorted(results.items())],
            [(k, p, n) for k, (p, n) in sorted(usage.items())],
            slices,
            coupons,
        )


def _add(totals: dict[Any, list[int]], key: Any, points: int) -> None:
    total = totals.get(key)
    if total is None:
        totals[key] = [points, 1]
    else:
        total[0] += points
        total[1] += 1


async def prepare(
    conn: Conn,
    book: CampaignBook,
    running: RunningSet,
    candidates: Sequence[tuple[tuple[str, str], PaymentFacts]],
    read: tuple[frozenset[str], dict[MemberKey, tuple[int, int]]] = (frozenset(), {}),
) -> BatchCampaigns:
    """The budgets the batch may draw on, for the payments a campaign can reach: shared
    ones claimed from slices, each member's read under the member's lock (which the batch
    holds)."""
    wanted: dict[BudgetKey, Allowance] = {}
    pairs: set[MemberKey] = set()
    for _, facts in candidates:
        place = running.at(facts.merchant_id, facts.category)
        demand(place, facts, wanted)
        pairs.update((facts.member_id, r.campaign_id) for r in place if r.member_budget)
    held = await _claim(conn, book, running.all, wanted) if wanted else {}
    members = await _member_allowances(conn, running.all, pairs, read) if pairs else {}
    allowances = Allowances({k: campaign_budgets.held(v) for k, v in held.items()}, members)
    return BatchCampaigns(running, allowances, held, facts=dict(candidates))


def _day_slices(
    running: tuple[Running, ...], keys: list[BudgetKey]
) -> list[tuple[BudgetKey, Slice]]:
    """The slices of the days among `keys`, which the claim cuts when a day is first needed
    (by any batch: ON CONFLICT DO NOTHING, in the claim's own statement)."""
    by_id = {r.campaign_id: r for r in running}
    cut: list[tuple[BudgetKey, Slice]] = []
    for key in keys:
        if key[1] != TOTAL_PERIOD:
            limit = by_id[key[0]].spec.budget.per_day
            cut += [(key, s) for s in campaign_budgets.split(limit)]
    return cut


async def _claim(
    conn: Conn, book: CampaignBook, running: tuple[Running, ...], wanted: dict[BudgetKey, Allowance]
) -> dict[BudgetKey, list[Slice]]:
    keys = sorted(wanted)
    asked = [(k, wanted[k].points or 0, wanted[k].awards or 0) for k in keys]
    start = secrets.randbelow(campaign_budgets.SLICES)  # batches start at different slices
    return await budget_store.claim(
        conn, asked, _day_slices(running, keys), start, campaign_budgets.FREE_SLICES_PER_CLAIM
    )


async def _member_allowances(
    conn: Conn,
    running: tuple[Running, ...],
    pairs: set[MemberKey],
    read: tuple[frozenset[str], dict[MemberKey, tuple[int, int]]],
) -> dict[MemberKey, Allowance]:
    """Each (member, campaign)'s budget left: from the batch's locked read when it covered
    the campaign (the usual case), else read now (the running set changed at this batch)."""
    by_id = {r.campaign_id: r for r in running}
    campaign_ids = {c for _, c in pairs}
    if campaign_ids <= read[0]:
        used = read[1]
    else:
        members = sorted({m for m, _ in pairs})
        used = await budget_store.member_usage(conn, members, sorted(campaign_ids))
    allowances = {}
    for member_id, campaign_id in pairs:
        points, awards = used.get((member_id, campaign_id), (0, 0))
        limit = by_id[campaign_id].spec.budget.per_member
        allowances[(member_id, campaign_id)] = member_allowance(limit, points, awards)
    return allowances
