"""Settling payments into the double-entry ledger, exactly once per (member, payment)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

import asyncpg

from services.points import debt, earn, metrics, tiers
from services.points.ledger_accounts import ISSUED, MEMBER_AVAILABLE, MEMBER_PENDING
from services.points.member_events import MemberDirectory
from services.points.processing import processing_restricted
from services.points.restrictions import require_readable
from services.points.rules import Rules, Tier, UnknownCurrency
from services.points.settlement import Payment, PointsState, SettlementResult, explanation_of
from services.points.store import ledger as store
from services.points.store import settlement as fast
from services.points.store import tiers as tier_store
from services.points.unknown_members import member_unknown
from services.runtime.coalesce import Coalescer
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import (
    DomainError,
    bad_field,
    failed_precondition,
    idempotency_key_reused,
)

# single settlements that share a batch: at most this many per batch, and this many batches
# at once (each holds a pooled connection while it runs)
COALESCED_MAX_BATCH = 100
COALESCED_MAX_IN_FLIGHT = 2


@dataclass(frozen=True)
class RulesInForce:
    version: int
    rules: Rules


@dataclass(frozen=True)
class ItemOutcome:
    """One item of a batch: a result, or the error that item alone met."""

    result: SettlementResult | None
    error: DomainError | None
    replayed: bool = False  # the result of an earlier call with the same key


@dataclass(frozen=True)
class Qualified:
    """A member's tier and window sum after a settlement, and the upgrade it caused."""

    state: tier_store.TierState | None
    qualifying: int
    upgrade: tier_store.TierState | None


class Ledger:
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

    @property
    def rules(self) -> RulesInForce:
        return self._rules

    def now(self) -> datetime:
        return self._clock()

    async def settle(self, payment: Payment) -> SettlementResult:
        """Concurrent single settlements share set-wise batches (group commit): under load
        a settlement costs a share of a batch's round trips and commit, not its own."""
        outcome = await self._coalescer.submit(payment)
        if outcome.error is not None:
            raise outcome.error
        if outcome.result is None:
            raise DomainError.internal("a settlement has neither a result nor an error")
        return outcome.result

    async def settle_many(self, payments: Sequence[Payment]) -> list[ItemOutcome]:
        """One database transaction for the whole batch, decided set-wise (see
        batch_settlement): a bad item fails alone, and the batch pays for a handful of
        statements and one commit instead of several statements per payment."""
        from services.points.batch_settlement import settle_set_wise

        outcomes = await in_transaction(
            self._pool, lambda conn: settle_set_wise(self, conn, payments)
        )
        metrics.settled(outcomes)  # committed: counted once
        return outcomes

    async def settle_item(self, conn: Conn, payment: Payment) -> ItemOutcome:
        try:
            async with conn.transaction():  # a savepoint inside the batch transaction
                result, replayed = await self._settle_in(conn, payment)
                return ItemOutcome(result, None, replayed)
        except DomainError as err:
            return ItemOutcome(None, err)

    async def _settle_in(self, conn: Conn, payment: Payment) -> tuple[SettlementResult, bool]:
        """The result, and whether it is an earlier call's (a replay)."""
        rules = self._rules.rules
        floor = -rules.negative_floor if rules.refund_policy == "allow_negative" else 0
        locked = await fast.lock_known_member(conn, payment.member_id, floor)
        if locked is None:
            raise member_unknown()
        day = earn.local_day(rules, payment.occurred_at)
        now = self._clock()
        window = tiers.window_days(rules, now)
        key = payment.idempotency_key
        seen = await fast.read_under_lock(conn, payment.member_id, key, day, window)
        if seen.request_hash is not None and seen.result is not None:
            # a repeat answers with the first result, whatever the member's state is now
            if seen.request_hash != payment.fingerprint():
                raise idempotency_key_reused("payment_id")
            return SettlementResult.from_json(seen.result), True
        if seen.state != "ACTIVE":
            raise failed_precondition(
                f"MEMBER_{seen.state}", f"a {seen.state} member does not earn points"
            )
        if seen.paused:
            raise processing_restricted()
        tier = tiers.tier_of(rules, seen.tier)
        earning = self.earning(seen.earned_today, payment, tier)
        after = self.qualified(seen.tier, seen.qualifying, earning.points, day, now)
        # a referred member: its first settlement makes the referral bonus due
        referral = (seen.referred_by, payment.payment_id) if seen.referred_by else None
        if earning.points > 0 and locked.available < 0:
            return await self._record_repaying_debt(
                conn, payment, earning, (locked.txn_id, day), (tier, after.upgrade), referral
            ), False
        return await self._record(
            conn, payment, earning, locked, (day, tier, after.upgrade), referral
        ), False

    def qualified(
        self,
        state: tier_store.TierState | None,
        qualifying: int,
        points: int,
        day: date,
        now: datetime,
    ) -> Qualified:
        """The window sum after earning `points` on `day`, and the upgrade it reaches.
        Only points earned count: a payment that earns none changes no tier."""
        rules = self._rules.rules
        if points <= 0:
            return Qualified(state, qualifying, None)
        if tiers.in_window(rules, now, day):
            qualifying += points
        upgrade = tiers.after_earning(rules, self._rules.version, state, qualifying, now)
        return Qualified(upgrade or state, qualifying, upgrade)

    def earning(self, earned_today: int, payment: Payment, tier: Tier) -> earn.Earning:
        """What the payment earns at the multiplier of the tier in force when it settles."""
        rules = self._rules.rules
        try:
            return earn.compute_earning(
                rules,
                payment.currency,
                payment.amount_minor,
                payment.category,
                tier.earn_multiplier_bps,
                earned_today,
            )
        except UnknownCurrency as exc:
            raise bad_field("amount.currency_code", "not a currency of the program") from exc

    def _nothing_yet(
        self, payment: Payment, earning: earn.Earning, txn_id: int, tier: Tier
    ) -> SettlementResult:
        return SettlementResult(
            member_id=payment.member_id,
            payment_id=payment.payment_id,
            points=earning.points,
            state=PointsState.NONE,
            available_at=None,
            expires_at=None,
            tier_multiplier_bps=tier.earn_multiplier_bps,
            rule_version=self._rules.version,
            txn_id=txn_id,
        )

    def _row(
        self, payment: Payment, earning: earn.Earning, result: SettlementResult, repaid: int
    ) -> fast.SettlementRow:
        explanation = explanation_of(payment, earning, earn.explain(earning))
        return fast.SettlementRow(
            txn_id=result.txn_id or 0,
            key=payment.idempotency_key,
            request_hash=payment.fingerprint(),
            rule_version=self._rules.version,
            points=earning.points,
            result=result.to_json(),
            explanation={**explanation, "debt_repaid": repaid},
        )

    def settlement_of(
        self,
        payment: Payment,
        earning: earn.Earning,
        ids: tuple[int, int, int],
        at: tuple[date, Tier],
    ) -> tuple[SettlementResult, fast.Credit | None, fast.SettlementRow]:
        """What settling the payment writes (no debt to repay): result, credit and row.
        `ids` are the transaction's, the lot's and the transfer's; `at` the payment's day
        and the tier whose multiplier it earned at."""
        txn_id, lot_id, transfer_id = ids
        day, tier = at
        result = self._nothing_yet(payment, earning, txn_id, tier)
        credit = None
        if earning.points > 0:
            rules = self._rules.rules
            available_at = earn.available_at(rules, payment.occurred_at)
            pending = available_at > self._clock()
            state = PointsState.PENDING if pending else PointsState.AVAILABLE
            credit = fast.Credit(
                lot_id=lot_id,
                transfer_id=transfer_id,
                state=state.value,
                to_account=MEMBER_PENDING if pending else MEMBER_AVAILABLE,
                earned_at=payment.occurred_at,
                available_at=available_at,
                expires_at=earn.expires_at(rules, payment.occurred_at),
                day=day,
            )
            result = replace(
                result, state=state, available_at=available_at, expires_at=credit.expires_at
            )
        return result, credit, self._row(payment, earning, result, 0)

    async def _record(
        self,
        conn: Conn,
        payment: Payment,
        earning: earn.Earning,
        locked: fast.Locked,
        at: tuple[date, Tier, tier_store.TierState | None],
        referral: tuple[str, str] | None = None,
    ) -> SettlementResult:
        """The common case (no debt to repay): everything in one statement."""
        day, tier, upgrade = at
        ids = (locked.txn_id, locked.lot_id, locked.transfer_id)
        result, credit, row = self.settlement_of(payment, earning, ids, (day, tier))
        await fast.write_settlement(conn, payment.member_id, row, credit, upgrade, referral)
        return result

    async def _record_repaying_debt(
        self,
        conn: Conn,
        payment: Payment,
        earning: earn.Earning,
        txn_day: tuple[int, date],
        tier: tuple[Tier, tier_store.TierState | None],
        referral: tuple[str, str] | None = None,
    ) -> SettlementResult:
        """A member in debt (allow_negative): the new lot's first points repay it."""
        (txn_id, day), (in_force, upgrade) = txn_day, tier
        (lot_id,) = await store.next_ids(conn, 1)
        result = self._nothing_yet(payment, earning, txn_id, in_force)
        result, repaid = await self._credit_and_repay(conn, payment, earning.points, result, lot_id)
        await store.add_earned_on(conn, payment.member_id, day, earning.points)
        await tier_store.add_qualifying(conn, payment.member_id, day, earning.points)
        if upgrade is not None:
            await tier_store.set_tier(conn, payment.member_id, upgrade)
        row = self._row(payment, earning, result, repaid)
        await fast.write_settlement(conn, payment.member_id, row, None, None, referral)
        return result

    async def _credit_and_repay(
        self, conn: Conn, payment: Payment, points: int, result: SettlementResult, lot_id: int
    ) -> tuple[SettlementResult, int]:
        """Credits a new lot whose first points repay the member's debt (allow_negative)."""
        owed = await debt.owed(conn, payment.member_id)  # before the credit raises `available`
        result = await self._credit(conn, payment, points, result, lot_id)
        repaid = min(points, owed)
        pending = result.state is PointsState.PENDING
        lot = (result.txn_id or 0, lot_id)
        await debt.repay_from_new_lot(
            conn, payment.member_id, lot, repaid, pending, self._rules.version
        )
        return result, repaid

    async def _credit(
        self, conn: Conn, payment: Payment, points: int, result: SettlementResult, lot_id: int
    ) -> SettlementResult:
        """A new lot, pending for the return window unless that already passed."""
        rules, version = self._rules.rules, self._rules.version
        available_at = earn.available_at(rules, payment.occurred_at)
        expires_at = earn.expires_at(rules, payment.occurred_at)
        pending = available_at > self._clock()
        state = PointsState.PENDING if pending else PointsState.AVAILABLE
        await store.insert_lot(
            conn,
            payment.member_id,
            store.NewLot(
                lot_id,
                result.txn_id or 0,
                state.value,
                points,
                payment.occurred_at,
                available_at,
                expires_at,
                version,
            ),
        )
        to_account = MEMBER_PENDING if pending else MEMBER_AVAILABLE
        await store.insert_transfers(
            conn,
            payment.member_id,
            [store.NewTransfer(result.txn_id or 0, ISSUED, to_account, points, lot_id, version)],
        )
        await store.add_to_balance(
            conn,
            payment.member_id,
            pending=points if pending else 0,
            available=0 if pending else points,
            earned=points,
        )
        return SettlementResult(
            result.member_id,
            result.payment_id,
            points,
            state,
            available_at,
            expires_at,
            result.tier_multiplier_bps,
            version,
            result.txn_id,
        )

    async def balance(self, member_id: str) -> tuple[store.BalanceRow, list[tuple[int, datetime]]]:
        async with self._pool.acquire() as conn:
            require_readable(await self._members.state_of(conn, member_id))
            now = self._clock()
            row = await store.get_balance(conn, member_id, now) or store.BalanceRow(0, 0, 0, 0)
            return row, await store.expiring_soonest(conn, member_id, 5, now)
