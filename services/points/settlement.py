"""SettlePayment, SettlePayments: payments settled into the double-entry ledger, exactly once
per (member, payment).

A batch is settled set-wise: lock every member of the batch at once, read what the lock
holder must see in one query, decide each item in Python (domain/settlement.py), write
everything in one statement. A bad item fails alone because every failure is decided before
anything is written; members in debt (rare) take the one-by-one path, which knows how to
repay it (`Settlement.settle_in_debt`, given to the batch). Concurrent single settlements
share such batches (group commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from datetime import date, datetime

import asyncpg

from services.points import debt, metrics
from services.points.domain import tiers
from services.points.domain.debt import Repayment
from services.points.domain.earning import Earning, local_day
from services.points.domain.ledger import (
    ISSUED,
    MEMBER_AVAILABLE,
    MEMBER_PENDING,
    LotState,
    NewLot,
    NewTransfer,
)
from services.points.domain.referrals import DueReferral
from services.points.domain.rules import RulesInForce, Tier
from services.points.domain.settlement import (
    ItemOutcome,
    Payment,
    PointsState,
    SettlementResult,
    earning_of,
    lot_terms,
    nothing_yet,
    replay_or_refuse,
    settlement_of,
    settlement_row,
)
from services.points.domain.settlement_batch import BatchView, BatchWrite
from services.points.domain.tiers import TierState, TierView
from services.points.members import MemberDirectory
from services.points.store import ledger as ledger_store
from services.points.store import settlement as settlement_store
from services.points.store import settlement_batch as settlement_batch_store
from services.points.store import tiers as tier_store
from services.runtime.coalesce import Coalescer
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import DomainError

# single settlements that share a batch: at most this many per batch, and this many batches
# at once (each holds a pooled connection while it runs)
COALESCED_MAX_BATCH = 100
COALESCED_MAX_IN_FLIGHT = 2

# the one-by-one path of a member in debt, inside the batch's transaction
SettleOne = Callable[[Conn, Payment], Awaitable[ItemOutcome]]


class Settlement:
    def __init__(
        self,
        pool: asyncpg.Pool,
        members: MemberDirectory,
        rules: RulesInForce,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._members = members
        self._rules = rules
        self._clock = clock
        self._coalescer: Coalescer[Payment, ItemOutcome] = Coalescer(
            self.settle_many, COALESCED_MAX_BATCH, COALESCED_MAX_IN_FLIGHT
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
                conn, payments, self._rules, self._clock, self.settle_in_debt
            ),
        )
        metrics.settled(outcomes)  # committed: counted once
        return outcomes

    async def settle_in_debt(self, conn: Conn, payment: Payment) -> ItemOutcome:
        """One payment on its own, in a savepoint of the caller's transaction: the path of a
        member in debt, whose new lot's first points repay it."""
        try:
            async with conn.transaction():
                result, replayed = await self._settle_in(conn, payment)
                return ItemOutcome(result, None, replayed)
        except DomainError as err:
            return ItemOutcome(None, err)

    async def _settle_in(self, conn: Conn, payment: Payment) -> tuple[SettlementResult, bool]:
        """The result, and whether it is an earlier call's (a replay)."""
        in_force = self._rules
        rules = in_force.rules
        member_id = payment.member_id
        locked = await settlement_store.lock_known_member(conn, member_id, rules.available_floor)
        day = local_day(rules, payment.occurred_at)
        now = self._clock()
        window = tiers.window_days(rules, now)
        key = payment.idempotency_key
        seen = None
        if locked is not None:
            seen = await settlement_store.read_under_lock(conn, member_id, key, day, window)
        replay = replay_or_refuse(payment, seen, None if seen is None else seen.prior)
        if replay is not None:
            return replay, True
        assert locked is not None and seen is not None  # refused above when unknown
        tier = tiers.tier_of(rules, seen.tier)
        earned = earning_of(in_force, payment, tier, seen.earned_today)
        after = tiers.qualified(
            in_force, now, TierView(seen.tier, seen.qualifying), earned.points, day
        )
        # a referred member: its first settlement makes the referral bonus due
        referral = None
        if seen.referred_by:
            referral = DueReferral(
                member_id, seen.referred_by, payment.payment_id, in_force.version
            )
        if earned.points > 0 and locked.available < 0:
            result = await self._record_repaying_debt(
                conn,
                payment,
                earned,
                now,
                txn_id=locked.ids.txn_id,
                day=day,
                tier=tier,
                upgrade=after.upgrade,
                referral=referral,
            )
            return result, False
        ids = locked.ids
        settled = settlement_of(
            in_force,
            now,
            payment,
            earned,
            txn_id=ids.txn_id,
            lot_id=ids.lot_id,
            transfer_id=ids.transfer_id,
            day=day,
            tier=tier,
        )
        await settlement_store.write_settlement(
            conn, member_id, settled.row, settled.credit, upgrade=after.upgrade, referral=referral
        )
        return settled.result, False

    async def _record_repaying_debt(
        self,
        conn: Conn,
        payment: Payment,
        earned: Earning,
        now: datetime,
        *,
        txn_id: int,
        day: date,
        tier: Tier,
        upgrade: TierState | None,
        referral: DueReferral | None,
    ) -> SettlementResult:
        """A member in debt (allow_negative): the new lot's first points repay it. `day`:
        the payment's; `tier`: the one it earned at."""
        member_id, points = payment.member_id, earned.points
        (lot_id,) = await ledger_store.next_ids(conn, 1)
        result = nothing_yet(self._rules, payment, points, txn_id, tier)
        owed = await ledger_store.debt_of(conn, member_id)  # before the credit raises `available`
        result = await self._credit(conn, payment, result, lot_id, now)
        repaid = min(points, owed)
        pending = result.state is PointsState.PENDING
        repayment = Repayment(txn_id=txn_id, lot_id=lot_id, points=repaid, pending=pending)
        await debt.repay_from_new_lot(conn, member_id, repayment, self._rules.version)
        await ledger_store.add_earned_on(conn, member_id, day, points)
        await tier_store.add_qualifying(conn, member_id, day, points)
        if upgrade is not None:
            await tier_store.set_tier(conn, member_id, upgrade)
        row = settlement_row(self._rules, payment, earned, result, repaid)
        await settlement_store.write_settlement(conn, member_id, row, None, referral=referral)
        return result

    async def _credit(
        self, conn: Conn, payment: Payment, result: SettlementResult, lot_id: int, now: datetime
    ) -> SettlementResult:
        """A new lot of the result's points, pending for the return window unless that
        already passed."""
        version, member_id, points = self._rules.version, payment.member_id, result.points
        terms = lot_terms(self._rules, now, payment)
        txn_id = result.txn_id or 0
        state = LotState.PENDING if terms.pending else LotState.AVAILABLE
        lot = NewLot(
            lot_id,
            txn_id,
            state,
            points,
            payment.occurred_at,
            terms.available_at,
            terms.expires_at,
            version,
        )
        await ledger_store.insert_lot(conn, member_id, lot)
        to_account = MEMBER_PENDING if terms.pending else MEMBER_AVAILABLE
        transfer = NewTransfer(txn_id, ISSUED, to_account, points, lot_id, version)
        await ledger_store.insert_transfers(conn, member_id, [transfer])
        await ledger_store.add_to_balance(
            conn,
            member_id,
            pending=points if terms.pending else 0,
            available=0 if terms.pending else points,
            earned=points,
        )
        return replace(
            result,
            state=terms.state,
            available_at=terms.available_at,
            expires_at=terms.expires_at,
            rule_version=version,
        )


async def settle_set_wise(
    conn: Conn,
    payments: Sequence[Payment],
    in_force: RulesInForce,
    clock: Callable[[], datetime],
    in_debt: SettleOne,
) -> list[ItemOutcome]:
    """Four statements for the whole batch: lock, read, write, and (rarely) `in_debt` for
    each payment of a member in debt."""
    view = await _read(conn, payments, in_force, clock)
    ids = iter(view.seen.ids)
    write = BatchWrite()
    outcomes: dict[int, ItemOutcome] = {}
    slow: list[int] = []
    # member order, then request order: the daily cap counts a member's payments in order
    for i in sorted(range(len(payments)), key=lambda i: (payments[i].member_id, i)):
        payment = payments[i]
        if view.available.get(payment.member_id, 0) < 0:
            slow.append(i)
            continue
        outcomes[i] = _decide(in_force, view, payment, ids, write)
    await settlement_batch_store.write_batch(conn, write)
    for i in slow:
        outcomes[i] = await in_debt(conn, payments[i])
    return [outcomes[i] for i in range(len(payments))]


async def _read(
    conn: Conn, payments: Sequence[Payment], in_force: RulesInForce, clock: Callable[[], datetime]
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
    )
    views = {m: TierView(s.tier, s.qualifying) for m, s in seen.members.items()}
    return BatchView(available=available, seen=seen, tiers=views, now=now)


def _decide(
    in_force: RulesInForce,
    view: BatchView,
    payment: Payment,
    ids: Iterator[int],
    write: BatchWrite,
) -> ItemOutcome:
    key = (payment.member_id, payment.idempotency_key)
    # a repeat answers with the first result and writes nothing: not counted as new work
    replayed = key in view.seen.done or key in view.in_batch
    try:
        return ItemOutcome(_settle(in_force, view, payment, ids, write), None, replayed)
    except DomainError as err:
        return ItemOutcome(None, err)


def _settle(
    in_force: RulesInForce,
    view: BatchView,
    payment: Payment,
    ids: Iterator[int],
    write: BatchWrite,
) -> SettlementResult:
    member_id = payment.member_id
    key = (member_id, payment.idempotency_key)
    member = view.seen.members.get(member_id) if member_id in view.available else None
    replay = replay_or_refuse(payment, member, view.seen.done.get(key) or view.in_batch.get(key))
    if replay is not None:
        return replay
    assert member is not None  # refused above when unknown
    rules = in_force.rules
    day = local_day(rules, payment.occurred_at)
    seen = view.tiers[member_id]
    tier = tiers.tier_of(rules, seen.state)
    earned = view.seen.earned
    earning = earning_of(in_force, payment, tier, earned.get((member_id, day), 0))
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
    )
    row = settled.row
    write.add(member_id, row, settled.credit)
    # as a single call would: the next item of this member earns at the upgraded tier
    after = tiers.qualified(in_force, view.now, seen, row.points, day)
    view.tiers[member_id] = TierView(after.state, after.qualifying)
    if after.upgrade is not None:
        write.tiers[member_id] = after.upgrade
    earned[(member_id, day)] = earned.get((member_id, day), 0) + row.points
    view.in_batch[key] = row
    if member.referrer is not None and member_id not in write.referrals:
        write.referrals[member_id] = DueReferral(
            member_id, member.referrer, payment.payment_id, row.rule_version
        )
    return settled.result
