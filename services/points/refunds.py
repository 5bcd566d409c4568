"""Refunds of settled payments: points clawed back exactly once per (member, refund_id).

The points to take back are `clawback_increment` over the running refunded total, so
repeated partial refunds take exactly what one full refund would. Where they come from is
domain/clawback.py: the payment's own lot, the holds on it, the member's other
usable lots, then their other held points; one transfer per lot (and hold) touched, each
naming its lot. What is still missing follows the refund policy:

- `within_balance`: written off. A transfer program:uncollectable -> program:issued records
  it, so program:issued nets every clawback and program:uncollectable shows what was lost;
  no member account moves.
- `allow_negative`: member:available -> program:issued goes below zero (down to
  -negative_floor, else NEGATIVE_LIMIT); future earnings repay it (domain/debt.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from services.points import metrics
from services.points.domain import refunds, tiers
from services.points.domain.clawback import Clawback, clawback_increment, plan_clawback
from services.points.domain.earning import local_day
from services.points.domain.ledger import (
    ISSUED,
    MEMBER_AVAILABLE,
    MEMBER_HELD,
    MEMBER_PENDING,
    UNCOLLECTABLE,
    NewTransaction,
    NewTransfer,
    TransactionKind,
)
from services.points.domain.refunds import (
    RefundedSoFar,
    RefundRequest,
    RefundResult,
    SettledPayment,
)
from services.points.domain.rules import RulesInForce
from services.points.domain.unknown_members import member_unknown
from services.points.restrictions import refuse_if_restricted
from services.points.store import balance as balance_store
from services.points.store import coupons as coupon_store
from services.points.store import ledger as ledger_store
from services.points.store import members as member_store
from services.points.store import refunds as refund_store
from services.points.store import tiers as tier_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import bad_field, idempotency_key_reused, not_found


class Refunds:
    def __init__(
        self,
        pool: asyncpg.Pool,
        rules: RulesInForce,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock or (lambda: datetime.now(UTC))

    async def refund(self, request: RefundRequest) -> RefundResult:
        result, replayed = await in_transaction(
            self._pool, lambda conn: self._refund_in(conn, request)
        )
        metrics.refunded(result, replayed)  # committed: counted once
        return result

    async def _replay(self, conn: Conn, request: RefundRequest) -> RefundResult | None:
        done = await ledger_store.find_transaction(conn, request.member_id, request.idempotency_key)
        if done is None:
            return None
        if done.request_hash != request.fingerprint():
            raise idempotency_key_reused("refund_id")
        return RefundResult.from_json(done.result)

    async def _refund_in(self, conn: Conn, request: RefundRequest) -> tuple[RefundResult, bool]:
        """The result, and whether it is an earlier call's (a replay)."""
        done = await self._replay(conn, request)
        if done is not None:
            return done, True
        await refuse_if_restricted(conn, request.member_id)
        payment = await refund_store.find_settled_payment(
            conn, request.member_id, request.payment_id
        )
        if payment is None:
            if await member_store.get_member(conn, request.member_id) is None:
                raise member_unknown()  # the refund raced the member's registration
            raise not_found("payment")
        if payment.currency != request.currency:
            raise bad_field("amount.currency_code", "must be the currency of the payment")
        floor = self._rules.rules.available_floor
        # lock order: the member's balance row, the payment's refunds row, then lots
        balance = await balance_store.lock_balance(conn, request.member_id, floor)
        done = await self._replay(conn, request)  # a duplicate may have committed meanwhile
        if done is not None:
            return done, True
        so_far = await refund_store.lock_refunded(conn, request.member_id, payment)
        too_much = refunds.exceeds_payment(payment, so_far, request)
        if too_much is not None:
            raise too_much
        await refund_store.sync_floor(conn, request.member_id, floor)
        return await self._record(conn, request, payment, so_far, balance.available), False

    async def _plan(
        self,
        conn: Conn,
        request: RefundRequest,
        payment: SettledPayment,
        so_far: RefundedSoFar,
        available: int,
    ) -> Clawback:
        points = clawback_increment(
            payment.points, payment.amount_minor, so_far.refunded_minor, request.amount_minor
        )
        lots = (
            await refund_store.lock_lots(conn, request.member_id, payment.lot_id) if points else []
        )
        rules, now = self._rules.rules, self._clock()
        plan = plan_clawback(points, payment.lot_id, lots, (), rules.refund_policy, now)
        if not plan.covered_by(payment.lot_id):
            # the holds on the own lot come before other lots: read (and lock) them only
            # when the own lot alone does not cover the clawback
            held = await refund_store.lock_held_parts(conn, request.member_id)
            plan = plan_clawback(points, payment.lot_id, lots, held, rules.refund_policy, now)
        too_low = refunds.below_floor(rules, plan, available)
        if too_low is not None:
            raise too_low
        return plan

    async def _record(
        self,
        conn: Conn,
        request: RefundRequest,
        payment: SettledPayment,
        so_far: RefundedSoFar,
        available: int,
    ) -> RefundResult:
        plan = await self._plan(conn, request, payment, so_far, available)
        txn_id = (await ledger_store.next_ids(conn, 1))[0]
        await self._apply(conn, request.member_id, payment, plan, txn_id)
        qualifying = refunds.qualifying_share(payment, so_far.points_clawed_back, plan.points)
        await self._disqualify(conn, request.member_id, payment, qualifying)
        total = so_far.refunded_minor + request.amount_minor
        if total == payment.amount_minor:  # the whole payment: its coupon comes back
            await coupon_store.restore_for_refund(
                conn, request.member_id, payment.payment_id, self._clock()
            )
        await refund_store.add_refunded(
            conn,
            request.member_id,
            payment.payment_id,
            amount_minor=request.amount_minor,
            points=plan.points,
        )
        result = RefundResult(
            member_id=request.member_id,
            refund_id=request.refund_id,
            payment_id=payment.payment_id,
            currency=payment.currency,
            points_clawed_back=plan.from_member,
            points_uncollectable=plan.uncollectable,
            points_from_holds=plan.from_account(MEMBER_HELD),
            refunded_total_minor=total,
            remaining_minor=payment.amount_minor - total,
            rule_version=self._rules.version,
            txn_id=txn_id,
        )
        policy = self._rules.rules.refund_policy
        txn = NewTransaction(
            txn_id=txn_id,
            kind=TransactionKind.REFUND,
            idempotency_key=request.idempotency_key,
            request_hash=request.fingerprint(),
            rule_version=self._rules.version,
            points=-plan.from_member,  # the change to what the member holds
            result=result.to_json(),
            explanation=refunds.explanation_of(request, payment, so_far, plan, policy),
        )
        await ledger_store.insert_transaction(conn, request.member_id, txn)
        return result

    async def _disqualify(
        self, conn: Conn, member_id: str, payment: SettledPayment, points: int
    ) -> None:
        """The clawed-back points (uncollectable ones too: they were not earned after all)
        leave the qualifying points of the payment's day; the tier drops if this refund
        takes the window sum below its threshold (domain/tiers.after_refund)."""
        if points <= 0 or payment.occurred_at is None:
            return
        rules, now = self._rules.rules, self._clock()
        day = local_day(rules, payment.occurred_at)
        first, last = tiers.window_days(rules, now)
        view = (await tier_store.tier_views(conn, [member_id], first, last))[member_id]
        await tier_store.take_qualifying(conn, member_id, day, points)
        after = view.qualifying - (points if first <= day <= last else 0)
        sums = (view.qualifying, max(0, after))
        dropped = tiers.after_refund(rules, self._rules.version, view.state, sums, now)
        if dropped is not None:
            await tier_store.set_tier(conn, member_id, dropped)

    async def _apply(
        self,
        conn: Conn,
        member_id: str,
        payment: SettledPayment,
        plan: Clawback,
        txn_id: int,
    ) -> None:
        version = self._rules.version
        transfers = [
            NewTransfer(txn_id, t.account, ISSUED, t.points, t.lot_id, version) for t in plan.takes
        ]
        for take in plan.takes:
            if take.hold_id is not None:
                continue
            # a pending lot refunded to nothing is cancelled: it will never mature
            await ledger_store.take_from_lot(
                conn,
                member_id,
                take.lot_id,
                take.points,
                cancel_when_empty=take.account == MEMBER_PENDING,
            )
        for account, points in (
            (MEMBER_AVAILABLE, plan.below_zero),
            (UNCOLLECTABLE, plan.uncollectable),
        ):
            if points:
                transfers.append(
                    NewTransfer(txn_id, account, ISSUED, points, payment.lot_id, version)
                )
        held = [t for t in plan.takes if t.hold_id is not None]
        if held:
            await refund_store.take_from_holds(conn, member_id, held, txn_id, self._clock())
        if transfers:
            await ledger_store.insert_transfers(conn, member_id, transfers)
        pending = plan.from_account(MEMBER_PENDING)
        available = plan.from_account(MEMBER_AVAILABLE) + plan.below_zero
        from_holds = plan.from_account(MEMBER_HELD)
        if pending or available or from_holds:
            await balance_store.add_to_balance(
                conn, member_id, pending=-pending, available=-available, held=-from_holds
            )
