"""Refunds of settled payments, without SQL: the request and its result, the settled
payment and what was refunded of it, the checks, and the explanation of a clawback (what it
takes and from where is domain/clawback.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.points.domain.clawback import Clawback, Take, clawback_points
from services.points.domain.ledger import MEMBER_AVAILABLE, TransactionKind, step
from services.points.domain.rules import RefundPolicy, Rules
from services.runtime.errors import DomainError, failed_precondition

REFUND_EXCEEDS_PAYMENT = "REFUND_EXCEEDS_PAYMENT"
NEGATIVE_LIMIT = "NEGATIVE_LIMIT"


class RefundStep(StrEnum):
    """The steps of a refund's stored explanation."""

    PAYMENT = "payment"
    REFUND = "refund"
    CLAWBACK_ROUND_UP = "clawback_round_up"
    TAKE = "take"  # from a lot
    TAKE_HELD = "take_held"  # from what a hold holds of a lot
    BELOW_ZERO = "below_zero"  # allow_negative
    UNCOLLECTABLE = "uncollectable"  # within_balance


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


@dataclass(frozen=True)
class SettledPayment:
    payment_id: str
    currency: str
    amount_minor: int
    points: int  # what the settlement awarded
    lot_id: int | None  # None when it awarded nothing
    occurred_at: datetime | None = None  # its qualifying points count on this day
    # campaign points of the settlement that did not count toward tiers
    non_qualifying: int = 0


def qualifying_share(payment: SettledPayment, clawed_before: int, clawed_now: int) -> int:
    """The tier-qualifying points a clawback of `clawed_now` points takes, when `clawed_before`
    were clawed back from the payment already: the payment's qualifying share, rounded up on
    the running total, so that all its refunds together take exactly its qualifying points
    when they take all its points."""
    if payment.non_qualifying <= 0 or payment.points <= 0:
        return clawed_now
    qualifying = max(0, payment.points - payment.non_qualifying)

    def share(clawed: int) -> int:
        return -(-qualifying * min(clawed, payment.points) // payment.points)

    return max(0, share(clawed_before + clawed_now) - share(clawed_before))


@dataclass(frozen=True)
class RefundedSoFar:
    refunded_minor: int
    points_clawed_back: int


def exceeds_payment(
    payment: SettledPayment, so_far: RefundedSoFar, request: RefundRequest
) -> DomainError | None:
    if so_far.refunded_minor + request.amount_minor > payment.amount_minor:
        return failed_precondition(
            REFUND_EXCEEDS_PAYMENT, "the refunds would exceed what is left of the payment"
        )
    return None


def below_floor(rules: Rules, plan: Clawback, available: int) -> DomainError | None:
    """A clawback that would take `available` (before it) below the allowed floor."""
    after = available - plan.from_account(MEMBER_AVAILABLE) - plan.below_zero
    if plan.below_zero and after < -rules.negative_floor:
        return failed_precondition(
            NEGATIVE_LIMIT, "the clawback would take the balance below the allowed floor"
        )
    return None


def explanation_of(
    request: RefundRequest,
    payment: SettledPayment,
    so_far: RefundedSoFar,
    plan: Clawback,
    policy: RefundPolicy,
) -> dict[str, Any]:
    """Each step of the clawback as data, plus a readable sentence."""
    steps = _rounding_steps(request, payment, so_far, plan) + _source_steps(plan)
    return {
        "kind": TransactionKind.REFUND,
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
    payment: SettledPayment,
    so_far: RefundedSoFar,
    plan: Clawback,
) -> list[dict[str, str]]:
    before, total = so_far.refunded_minor, so_far.refunded_minor + request.amount_minor
    share_before = clawback_points(payment.points, payment.amount_minor, before)
    share_total = clawback_points(payment.points, payment.amount_minor, total)
    paid, points = payment.amount_minor, payment.points
    return [
        step(
            RefundStep.PAYMENT,
            paid,
            f"the payment of {paid} {payment.currency} minor units earned {points} points",
        ),
        step(
            RefundStep.REFUND,
            request.amount_minor,
            f"this refund of {request.amount_minor},"
            f" after {before} refunded before, makes {total} refunded in all",
        ),
        step(
            RefundStep.CLAWBACK_ROUND_UP,
            plan.points,
            f"ceil({points} x {total}/{paid}) ="
            f" {share_total} less the {share_before} clawed back before is {plan.points}",
        ),
    ]


def _source_steps(plan: Clawback) -> list[dict[str, str]]:
    steps = [_take_step(t) for t in plan.takes]
    if plan.below_zero:
        steps.append(
            step(
                RefundStep.BELOW_ZERO,
                plan.below_zero,
                f"{plan.below_zero} taken below"
                " zero (allow_negative); later earnings repay them first",
            )
        )
    if plan.uncollectable:
        steps.append(
            step(
                RefundStep.UNCOLLECTABLE,
                plan.uncollectable,
                f"{plan.uncollectable} the member no longer had, written off (within_balance)",
            )
        )
    return steps


def _take_step(take: Take) -> dict[str, str]:
    if take.hold_id is None:
        return step(
            RefundStep.TAKE, take.points, f"{take.points} from lot {take.lot_id} ({take.account})"
        )
    note = f"{take.points} held by hold {take.hold_id} from lot {take.lot_id}, taken from the hold"
    return step(RefundStep.TAKE_HELD, take.points, note)
