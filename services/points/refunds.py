"""Refunds of settled payments: points clawed back exactly once per (member, refund_id).

The points to take back are `earn.clawback_increment` over the running refunded total, so
repeated partial refunds take exactly what one full refund would. Where they come from is
services/points/clawback.py: the payment's own lot, the holds on it, the member's other
usable lots, then their other held points; one transfer per lot (and hold) touched, each
naming its lot. What is still missing follows the refund policy:

- `within_balance`: written off. A transfer program:uncollectable -> program:issued records
  it, so program:issued nets every clawback and program:uncollectable shows what was lost;
  no member account moves.
- `allow_negative`: member:available -> program:issued goes below zero (down to
  -negative_floor, else NEGATIVE_LIMIT); future earnings repay it (services/points/debt.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.points import earn, metrics, tiers
from services.points.clawback import Clawback, Take, plan_clawback
from services.points.ledger import RulesInForce
from services.points.ledger_accounts import (
    ISSUED,
    MEMBER_AVAILABLE,
    MEMBER_HELD,
    MEMBER_PENDING,
    UNCOLLECTABLE,
)
from services.points.restrictions import refuse_if_restricted
from services.points.store import ledger as ledger_store
from services.points.store import members as member_store
from services.points.store import refunds as store
from services.points.store import tiers as tier_store
from services.points.unknown_members import member_unknown
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import (
    bad_field,
    failed_precondition,
    idempotency_key_reused,
    not_found,
)


@dataclass(frozen=True)
class RefundRequest:
    member_id: str
    payment_id: str
    refund_id: str
    currency: str
    amount_minor: int
    reason: str

    @property
    def idempotency_key(self) -> str:
        return f"refund:{self.refund_id}"

    def fingerprint(self) -> bytes:
        """What makes a repeat the same request (the reason carries no personal information)."""
        canonical = json.dumps(
            [
                self.member_id,
                self.payment_id,
                self.refund_id,
                self.currency,
                self.amount_minor,
                self.reason,
            ]
        )
        return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class RefundResult:
    member_id: str
    refund_id: str
    payment_id: str
    currency: str
    points_clawed_back: int  # taken from the member: lots, or below zero
    points_uncollectable: int  # written off under within_balance
    refunded_total_minor: int
    remaining_minor: int
    rule_version: int
    txn_id: int
    # of points_clawed_back, what open holds held (results stored before: 0)
    points_from_holds: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RefundResult:
        return cls(**doc)


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
        payment = await store.find_settled_payment(conn, request.member_id, request.payment_id)
        if payment is None:
            if await member_store.get_member(conn, request.member_id) is None:
                raise member_unknown()  # the refund raced the member's registration
            raise not_found("payment")
        if payment.currency != request.currency:
            raise bad_field("amount.currency_code", "must be the currency of the payment")
        rules = self._rules.rules
        floor = -rules.negative_floor if rules.refund_policy == "allow_negative" else 0
        # lock order: the member's balance row, the payment's refunds row, then lots
        balance = await ledger_store.lock_balance(conn, request.member_id, floor)
        done = await self._replay(conn, request)  # a duplicate may have committed meanwhile
        if done is not None:
            return done, True
        so_far = await store.lock_refunded(conn, request.member_id, payment)
        if so_far.refunded_minor + request.amount_minor > payment.amount_minor:
            raise failed_precondition(
                "REFUND_EXCEEDS_PAYMENT", "the refunds would exceed what is left of the payment"
            )
        await store.sync_floor(conn, request.member_id, floor)
        return await self._record(conn, request, payment, so_far, balance.available), False

    async def _plan(
        self,
        conn: Conn,
        request: RefundRequest,
        payment: store.SettledPayment,
        so_far: store.RefundedSoFar,
        available: int,
    ) -> Clawback:
        points = earn.clawback_increment(
            payment.points, payment.amount_minor, so_far.refunded_minor, request.amount_minor
        )
        lots = await store.lock_lots(conn, request.member_id, payment.lot_id) if points else []
        rules, now = self._rules.rules, self._clock()
        plan = plan_clawback(points, payment.lot_id, lots, (), rules.refund_policy, now)
        if not plan.covered_by(payment.lot_id):
            # the holds on the own lot come before other lots: read (and lock) them only
            # when the own lot alone does not cover the clawback
            held = await store.lock_held_parts(conn, request.member_id)
            plan = plan_clawback(points, payment.lot_id, lots, held, rules.refund_policy, now)
        after = available - plan.from_account(MEMBER_AVAILABLE) - plan.below_zero
        if plan.below_zero and after < -rules.negative_floor:
            raise failed_precondition(
                "NEGATIVE_LIMIT", "the clawback would take the balance below the allowed floor"
            )
        return plan

    async def _record(
        self,
        conn: Conn,
        request: RefundRequest,
        payment: store.SettledPayment,
        so_far: store.RefundedSoFar,
        available: int,
    ) -> RefundResult:
        plan = await self._plan(conn, request, payment, so_far, available)
        txn_id = (await ledger_store.next_ids(conn, 1))[0]
        await self._apply(conn, request.member_id, payment, plan, txn_id)
        await self._disqualify(conn, request.member_id, payment, plan.points)
        total = so_far.refunded_minor + request.amount_minor
        await store.add_refunded(
            conn, request.member_id, payment.payment_id, request.amount_minor, plan.points
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
        await ledger_store.insert_transaction(
            conn,
            request.member_id,
            ledger_store.NewTransaction(
                txn_id,
                "refund",
                request.idempotency_key,
                request.fingerprint(),
                self._rules.version,
                -plan.from_member,  # the change to what the member holds
                result.to_json(),
                explanation_of(request, payment, so_far, plan, self._rules.rules.refund_policy),
            ),
        )
        return result

    async def _disqualify(
        self, conn: Conn, member_id: str, payment: store.SettledPayment, points: int
    ) -> None:
        """The clawed-back points (uncollectable ones too: they were not earned after all)
        leave the qualifying points of the payment's day; the tier drops if this refund
        takes the window sum below its threshold (tiers.after_refund)."""
        if points <= 0 or payment.occurred_at is None:
            return
        rules, now = self._rules.rules, self._clock()
        day = earn.local_day(rules, payment.occurred_at)
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
        payment: store.SettledPayment,
        plan: Clawback,
        txn_id: int,
    ) -> None:
        version = self._rules.version
        transfers = [
            ledger_store.NewTransfer(txn_id, t.account, ISSUED, t.points, t.lot_id, version)
            for t in plan.takes
        ]
        for take in plan.takes:
            if take.hold_id is not None:
                continue
            # a pending lot refunded to nothing is cancelled: it will never mature
            await store.take_from_lot(
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
                    ledger_store.NewTransfer(
                        txn_id, account, ISSUED, points, payment.lot_id, version
                    )
                )
        held = [t for t in plan.takes if t.hold_id is not None]
        if held:
            await store.take_from_holds(conn, member_id, held, txn_id, self._clock())
        if transfers:
            await ledger_store.insert_transfers(conn, member_id, transfers)
        pending = plan.from_account(MEMBER_PENDING)
        available = plan.from_account(MEMBER_AVAILABLE) + plan.below_zero
        from_holds = plan.from_account(MEMBER_HELD)
        if pending or available or from_holds:
            await ledger_store.add_to_balance(
                conn, member_id, pending=-pending, available=-available, held=-from_holds
            )


def explanation_of(
    request: RefundRequest,
    payment: store.SettledPayment,
    so_far: store.RefundedSoFar,
    plan: Clawback,
    policy: str,
) -> dict[str, Any]:
    """Each step of the clawback as data, plus a readable sentence."""
    steps = _rounding_steps(request, payment, so_far, plan) + _source_steps(plan)
    return {
        "kind": "refund",
        "payment": {
            "payment_id": payment.payment_id,
            "currency": payment.currency,
            "amount_minor": payment.amount_minor,
            "points": payment.points,
        },
        "refund": {
            "refund_id": request.refund_id,
            "amount_minor": request.amount_minor,
            "reason": request.reason,
            "refunded_before_minor": so_far.refunded_minor,
        },
        "policy": policy,
        "steps": steps,
        "points": plan.points,
        "sentence": f"Clawed back {plan.points} points: "
        + ", ".join(s["note"] for s in steps)
        + ".",
    }


def _rounding_steps(
    request: RefundRequest,
    payment: store.SettledPayment,
    so_far: store.RefundedSoFar,
    plan: Clawback,
) -> list[dict[str, str]]:
    before, total = so_far.refunded_minor, so_far.refunded_minor + request.amount_minor
    share_before = earn.clawback_points(payment.points, payment.amount_minor, before)
    share_total = earn.clawback_points(payment.points, payment.amount_minor, total)
    paid, points = payment.amount_minor, payment.points
    return [
        _step(
            "payment",
            paid,
            f"the payment of {paid} {payment.currency} minor units earned {points} points",
        ),
        _step(
            "refund",
            request.amount_minor,
            f"this refund of {request.amount_minor},"
            f" after {before} refunded before, makes {total} refunded in all",
        ),
        _step(
            "clawback_round_up",
            plan.points,
            f"ceil({points} x {total}/{paid}) ="
            f" {share_total} less the {share_before} clawed back before is {plan.points}",
        ),
    ]


def _source_steps(plan: Clawback) -> list[dict[str, str]]:
    steps = [_take_step(t) for t in plan.takes]
    if plan.below_zero:
        steps.append(
            _step(
                "below_zero",
                plan.below_zero,
                f"{plan.below_zero} taken below"
                " zero (allow_negative); later earnings repay them first",
            )
        )
    if plan.uncollectable:
        steps.append(
            _step(
                "uncollectable",
                plan.uncollectable,
                f"{plan.uncollectable} the member no longer had, written off (within_balance)",
            )
        )
    return steps


def _take_step(take: Take) -> dict[str, str]:
    if take.hold_id is None:
        return _step("take", take.points, f"{take.points} from lot {take.lot_id} ({take.account})")
    note = f"{take.points} held by hold {take.hold_id} from lot {take.lot_id}, taken from the hold"
    return _step("take_held", take.points, note)


def _step(name: str, value: int, note: str) -> dict[str, str]:
    return {"name": name, "value": str(value), "note": note}
