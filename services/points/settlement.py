"""SettlePayment, SettlePayments: payments settled into the double-entry ledger, exactly once
per (member, payment).

A batch is settled set-wise: lock every member of the batch at once, read what the lock
holder must see in one query, decide each item in Python (domain/settlement.py), write
everything in one statement. A bad item fails alone because every failure is decided before
anything is written; members in debt (rare) take the one-by-one path, which knows how to
repay it (settlement_in_debt.py, given to the batch). Concurrent single settlements share
such batches (group commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

from services.points import metrics, settlement_campaigns
from services.points.domain import tiers
from services.points.domain.campaign_awards import (
    NO_CAMPAIGNS,
    CampaignOutcome,
    PaymentFacts,
    RunningSet,
    with_campaigns,
)
from services.points.domain.earning import local_day
from services.points.domain.referrals import DueReferral
from services.points.domain.rules import RulesInForce
from services.points.domain.settlement import (
    ItemOutcome,
    Payment,
    SettlementResult,
    earning_of,
    replay_or_refuse,
    settlement_of,
)
from services.points.domain.settlement_batch import BatchView, BatchWrite, Key
from services.points.domain.tiers import TierView
from services.points.members import MemberDirectory
from services.points.settlement_campaigns import (
    BatchCampaigns,
    CampaignBook,
    MemberFacts,
    facts_of,
)
from services.points.settlement_in_debt import SettlementInDebt
from services.points.store import campaigns as campaign_store
from services.points.store import settlement_batch as settlement_batch_store
from services.runtime.coalesce import Coalescer
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import DomainError

# single settlements that share a batch: at most this many per batch, and this many batches
# at once (each holds a pooled connection while it runs)
COALESCED_MAX_BATCH = 100
COALESCED_MAX_IN_FLIGHT = 2

# the one-by-one path of a member in debt, inside the batch's transaction, with what the
# running campaigns give the payment (decided by the batch, which holds their budgets)
SettleOne = Callable[[Conn, Payment, CampaignOutcome], Awaitable[ItemOutcome]]


class Settlement:
    def __init__(
        self,
        pool: asyncpg.Pool,
        members: MemberDirectory,
        rules: RulesInForce,
        clock: Callable[[], datetime],
        linger_s: float = 0.0,
    ) -> None:
        self._pool = pool
        self._members = members
        self._rules = rules
        self._clock = clock
        self._in_debt = SettlementInDebt(rules, clock)
        self.campaigns = CampaignBook()
        self._coalescer: Coalescer[Payment, ItemOutcome] = Coalescer(
            self.settle_many, COALESCED_MAX_BATCH, COALESCED_MAX_IN_FLIGHT, linger_s
        )

    async def settle(self, payment: Payment) -> SettlementResult:
        """Concurrent single settlements share set-wise batches (group commit): under load
        a settlement costs a share of a batch's round trips and commit, not its own."""
        outcome = await self._coalescer.submit(payment)
        if outcome.error is not None:
            raise outcome.error
        if outcome.result is None:
            raise DomainError.internal("a settlement has neither a result nor an error")
        return outcome.result

    async def settle_batch(self, payments: Sequence[Payment]) -> list[ItemOutcome]:
        """SettlePayments: as `settle_many`, and items refused because points does not know
        the member get the answer unknown_members gives (retry, or final after the grace)."""
        outcomes = await self.settle_many(payments)
        return await self._members.refine_unknown(payments, outcomes)

    async def settle_many(self, payments: Sequence[Payment]) -> list[ItemOutcome]:
        """One database transaction for the whole batch, decided set-wise: a bad item fails
        alone, and the batch pays for a handful of statements and one commit instead of
        several statements per payment."""
        outcomes = await in_transaction(
            self._pool,
            lambda conn: settle_set_wise(
                conn, payments, self._rules, self._clock, self._in_debt.settle, self.campaigns
            ),
        )
        metrics.settled(outcomes)  # committed: counted once
        return outcomes


async def settle_set_wise(
    conn: Conn,
    payments: Sequence[Payment],
    in_force: RulesInForce,
    clock: Callable[[], datetime],
    in_debt: SettleOne,
    book: CampaignBook | None = None,
) -> list[ItemOutcome]:
    """Four statements for the whole batch: lock, read, write, and (rarely) `in_debt` for
    each payment of a member in debt; running campaigns add their budgets' claim and the
    record of what they gave (settlement_campaigns.py)."""
    book = book or CampaignBook()
    asked = book.needs_first_payment
    view = await _read(conn, payments, in_force, clock, asked, book.member_budgets)
    running = await book.running(conn, view.seen.campaign_epoch)
    if book.needs_first_payment and not asked:  # the running set changed to need it
        await _read_settled_before(conn, view)
    campaigns = await _campaigns(conn, book, payments, in_force, view, running) if running else None
    ids = iter(view.seen.ids)
    write = BatchWrite()
    outcomes: dict[int, ItemOutcome] = {}
    slow: dict[int, CampaignOutcome] = {}
    # member order, then request order: the daily cap counts a member's payments in order
    for i in sorted(range(len(payments)), key=lambda i: (payments[i].member_id, i)):
        payment = payments[i]
        if view.available.get(payment.member_id, 0) < 0:
            slow[i] = _in_debt_award(in_force, view, payment, campaigns)
            continue
        outcomes[i] = _decide(in_force, view, payment, ids, write, campaigns)
    given = None if campaigns is None else campaigns.flush()
    await settlement_batch_store.write_batch(conn, write, given)
    for i, award in slow.items():
        outcomes[i] = outcome = await in_debt(conn, payments[i], award)
        if campaigns is not None and outcome.result is not None and not outcome.replayed:
            day = local_day(in_force.rules, payments[i].occurred_at)
            campaigns.record(payments[i].member_id, payments[i].payment_id, day, award)
    rest = None if campaigns is None else campaigns.flush()
    if rest is not None:  # what the one-by-one path's settlements got
        await campaign_store.record_awards(conn, rest)
    return [outcomes[i] for i in range(len(payments))]


async def _read(
    conn: Conn,
    payments: Sequence[Payment],
    in_force: RulesInForce,
    clock: Callable[[], datetime],
    settled_before: bool,
    usage_of: Sequence[str] = (),
) -> BatchView:
    rules = in_force.rules
    members = sorted({p.member_id for p in payments})
    available = await settlement_batch_store.lock_known_members(
        conn, members, rules.available_floor
    )
    known = [p for p in payments if p.member_id in available]
    days = {(p.member_id, local_day(rules, p.occurred_at)) for p in known}
    now = clock()  # one clock reading (and so one window) for the whole batch
    seen = await settlement_batch_store.read_locked(
        conn,
        list(available),
        keys=[(p.member_id, p.idempotency_key) for p in known],
        member_days=sorted(days),
        window=tiers.window_days(rules, now),
        id_count=3 * len(known),
        settled_before=settled_before,
        usage_of=usage_of,
    )
    views = {m: TierView(s.tier, s.qualifying) for m, s in seen.members.items()}
    return BatchView(available=available, seen=seen, tiers=views, now=now)


async def _read_settled_before(conn: Conn, view: BatchView) -> None:
    members = view.seen.members
    settled = await settlement_batch_store.settled_before(conn, sorted(members))
    for member_id, seen in members.items():
        members[member_id] = replace(seen, settled_before=member_id in settled)


def _facts(
    in_force: RulesInForce, view: BatchView, payment: Payment, first_payment: bool
) -> PaymentFacts | None:
    """What the campaigns read of the payment and its member, as the batch's earlier items
    left the member (its tier)."""
    member_id = payment.member_id
    member = view.seen.members[member_id]
    tier = tiers.tier_of(in_force.rules, view.tiers[member_id].state)
    facts = MemberFacts(tier.code, member.registered_at, member.settled_before)
    day = local_day(in_force.rules, payment.occurred_at)
    return facts_of(in_force.rules, payment, day, facts, first_payment)


async def _campaigns(
    conn: Conn,
    book: CampaignBook,
    payments: Sequence[Payment],
    in_force: RulesInForce,
    view: BatchView,
    running: RunningSet,
) -> BatchCampaigns:
    """The budgets the batch may draw on, from the payments that may settle (an upper
    bound: repeats and refusals are left out where the read already tells)."""
    candidates, seen_keys = [], set()
    for p in payments:
        key = (p.member_id, p.idempotency_key)
        member = view.seen.members.get(p.member_id)
        if member is None or key in view.seen.done or key in seen_keys:
            continue
        seen_keys.add(key)
        if not running.budgeted_at(p.merchant_id, p.category):
            continue  # no budgeted campaign can reach it: nothing to claim for it
        found = _facts(in_force, view, p, view.seen.members[p.member_id].settled_before is False)
        if found is not None:
            candidates.append((key, found))
    read = (view.seen.usage_of, view.seen.usage)
    return await settlement_campaigns.prepare(conn, book, running, candidates, read)


def _award(
    in_force: RulesInForce, view: BatchView, payment: Payment, campaigns: BatchCampaigns | None
) -> CampaignOutcome:
    if campaigns is None:
        return NO_CAMPAIGNS
    member_id = payment.member_id
    first = (
        view.seen.members[member_id].settled_before is False
        and member_id not in campaigns.settled_in_batch
    )
    campaigns.settled_in_batch.add(member_id)
    place = campaigns.running.at(payment.merchant_id, payment.category)
    if not place:
        return NO_CAMPAIGNS
    found = campaigns.facts.get((member_id, payment.idempotency_key))
    if found is None:
        found = _facts(in_force, view, payment, first)
        if found is None:  # its currency has no earn rate: the item fails on its own
            return NO_CAMPAIGNS
    else:
        # the tier as the batch's earlier items left it; the first payment as of this item
        tier = tiers.tier_of(in_force.rules, view.tiers[member_id].state).code
        found = found._replace(tier=tier, first_payment=first)
    return campaigns.decide(place, found)


def _in_debt_award(
    in_force: RulesInForce, view: BatchView, payment: Payment, campaigns: BatchCampaigns | None
) -> CampaignOutcome:
    """The campaigns' award of a payment the one-by-one path settles (none for a repeat or
    a refusal, which that path answers as the batch would)."""
    key = (payment.member_id, payment.idempotency_key)
    member = view.seen.members.get(payment.member_id)
    earlier = view.seen.done.get(key) or view.in_batch.get(key)
    try:
        if replay_or_refuse(payment, member, earlier) is not None:
            return NO_CAMPAIGNS
    except DomainError:
        return NO_CAMPAIGNS
    return _award(in_force, view, payment, campaigns)


def _decide(
    in_force: RulesInForce,
    view: BatchView,
    payment: Payment,
    ids: Iterator[int],
    write: BatchWrite,
    campaigns: BatchCampaigns | None,
) -> ItemOutcome:
    key = (payment.member_id, payment.idempotency_key)
    # a repeat answers with the first result and writes nothing: not counted as new work
    replayed = key in view.seen.done or key in view.in_batch
    try:
        result = _settle(in_force, view, payment, key, ids, write, campaigns)
        return ItemOutcome(result, None, replayed)
    except DomainError as err:
        return ItemOutcome(None, err)


def _settle(
    in_force: RulesInForce,
    view: BatchView,
    payment: Payment,
    key: Key,
    ids: Iterator[int],
    write: BatchWrite,
    campaigns: BatchCampaigns | None,
) -> SettlementResult:
    member_id = payment.member_id
    member = view.seen.members.get(member_id) if member_id in view.available else None
    replay = replay_or_refuse(payment, member, view.seen.done.get(key) or view.in_batch.get(key))
    if replay is not None:
        return replay
    assert member is not None  # refused above when unknown
    rules = in_force.rules
    day = local_day(rules, payment.occurred_at)
    before = view.tiers[member_id]
    tier = tiers.tier_of(rules, before.state)
    program = earning_of(in_force, payment, tier, view.seen.earned.get((member_id, day), 0))
    award = _award(in_force, view, payment, campaigns)
    earning = with_campaigns(program, award)
    settled = settlement_of(
        in_force,
        view.now,
        payment,
        earning,
        txn_id=next(ids),
        lot_id=next(ids),
        transfer_id=next(ids),
        day=day,
        tier=tier,
        campaigns=award,
    )
    row = settled.row
    qualifying = program.points + award.qualifying_points
    counted = None if not award.awards else (program.points, qualifying)
    write.add(member_id, row, settled.credit, counted)
    if campaigns is not None:
        campaigns.record(member_id, payment.payment_id, day, award)
    # as a single call would leave it for the next item: its tier and window sum (the next
    # item earns at an upgraded tier), the day's earnings (the daily cap), the key (a
    # repeat in the batch), and a referral bonus made due (once)
    after = tiers.qualified(in_force, view.now, before, qualifying, day)
    view.tiers[member_id] = TierView(after.state, after.qualifying)
    if after.upgrade is not None:
        write.tiers[member_id] = after.upgrade
    earned, member_day = view.seen.earned, (member_id, day)
    earned[member_day] = earned.get(member_day, 0) + program.points
    view.in_batch[key] = row
    if member.referrer is not None and member_id not in write.referrals:
        write.referrals[member_id] = DueReferral(
            member_id, member.referrer, payment.payment_id, row.rule_version
        )
    return settled.result
