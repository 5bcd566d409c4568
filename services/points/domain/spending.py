"""Spending without SQL: the requests and their idempotency keys, the holds and lots they
take from, the results stored for repeats, and the plans of which lots give or get back how
many points."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from services.points.domain.ledger import LotState, TransactionKind, step
from services.runtime.errors import DomainError, failed_precondition

INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
HOLD_NOT_HELD = "HOLD_NOT_HELD"
HOLD_EXPIRED = "HOLD_EXPIRED"
CAPTURE_EXCEEDS_HOLD = "CAPTURE_EXCEEDS_HOLD"


class SpendingStep(StrEnum):
    """The steps of a spending transaction's stored explanation."""

    TAKE = "take"  # from a lot (redemptions)
    COST = "cost"  # of a reward
    HELD = "held"
    CAPTURED = "captured"
    RETURNED = "returned"
    EXPIRED = "expired"  # the lot expired while held
    DEBT_REPAID = "debt_repaid"


class HoldState(StrEnum):
    """points.holds.state (migrations 004 and 011)."""

    HELD = "HELD"
    CAPTURED = "CAPTURED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"
    CLAWED_BACK = "CLAWED_BACK"  # a refund took back every point it held


# the transaction that closes a hold in each state
KIND_OF_STATE = {
    HoldState.CAPTURED: TransactionKind.CAPTURE,
    HoldState.RELEASED: TransactionKind.RELEASE,
    HoldState.EXPIRED: TransactionKind.HOLD_EXPIRY,
}
# the request field each key prefix comes from, for IDEMPOTENCY_KEY_REUSED
KEY_FIELD = {"hold": "hold_id", "capture": "capture_id"}


@dataclass(frozen=True)
class SpendableLot:
    lot_id: int
    remaining: int
    expires_at: datetime


@dataclass(frozen=True)
class HeldLot:
    """A lot a hold took points from, with the lot as it is now."""

    lot_id: int
    points: int  # what the hold took from it
    state: LotState
    expires_at: datetime


@dataclass(frozen=True)
class HoldRow:
    member_id: str
    hold_id: str
    state: HoldState
    points: int
    captured_points: int
    expires_at: datetime
    rule_version: int
    last_txn_id: int
    clawed_back_points: int = 0  # what refunds took back from it (not in `points`)


class LotPart(NamedTuple):
    """Points of one lot (taken, held, moved or given back)."""

    lot_id: int
    points: int


LotPoints = list[LotPart]


class Taken(NamedTuple):
    """What a spend takes from one lot."""

    lot: SpendableLot
    points: int


class LotTaken(NamedTuple):
    """A lot a redemption took points from, as its result records it (spending order)."""

    lot_id: int
    points: int
    expires_at: datetime

    def to_json(self) -> list[Any]:
        return [self.lot_id, self.points, self.expires_at.isoformat()]

    @classmethod
    def from_json(cls, doc: list[Any]) -> LotTaken:
        lot_id, points, expires_at = doc
        return cls(int(lot_id), int(points), datetime.fromisoformat(expires_at))


class HoldKey(NamedTuple):
    member_id: str
    hold_id: str


@dataclass(frozen=True)
class Settling:
    """One settlement of a hold: what closes it, under which key and rule version."""

    state: HoldState  # CAPTURED, RELEASED or EXPIRED
    captured: int
    key: str
    fingerprint: bytes
    version: int
    now: datetime


def hold_not_held(state: HoldState) -> DomainError:
    if state == HoldState.CLAWED_BACK:
        return failed_precondition(
            HOLD_NOT_HELD, "a refund took back every point of the hold: nothing is held"
        )
    return failed_precondition(HOLD_NOT_HELD, f"the hold is already {state.lower()}")


def insufficient_points(message: str) -> DomainError:
    return failed_precondition(INSUFFICIENT_POINTS, message)


def _fingerprint(*fields: object) -> bytes:
    return hashlib.sha256(json.dumps(list(fields)).encode()).digest()


@dataclass(frozen=True)
class HoldRequest:
    member_id: str
    hold_id: str
    points: int
    reason: str
    reference: str

    @property
    def idempotency_key(self) -> str:
        return f"hold:{self.hold_id}"

    def fingerprint(self) -> bytes:
        return _fingerprint(self.member_id, self.hold_id, self.points, self.reason, self.reference)


@dataclass(frozen=True)
class CaptureRequest:
    member_id: str
    hold_id: str
    capture_id: str
    points: int

    @property
    def idempotency_key(self) -> str:
        return f"capture:{self.capture_id}"

    def fingerprint(self) -> bytes:
        return _fingerprint(self.member_id, self.hold_id, self.capture_id, self.points)


@dataclass(frozen=True)
class ReleaseRequest:
    member_id: str
    hold_id: str
    request_id: str

    @property
    def idempotency_key(self) -> str:
        return f"release:{self.request_id}"

    def fingerprint(self) -> bytes:
        return _fingerprint(self.member_id, self.hold_id, self.request_id)


@dataclass(frozen=True)
class RedeemRequest:
    member_id: str
    request_id: str
    points: int
    reference: str

    @property
    def idempotency_key(self) -> str:
        return f"redeem:{self.request_id}"

    def fingerprint(self) -> bytes:
        return _fingerprint(self.member_id, self.request_id, self.points, self.reference)


@dataclass(frozen=True)
class HoldView:
    """A hold as an RPC answers it; stored as the result of each of its transactions."""

    member_id: str
    hold_id: str
    points: int
    state: HoldState
    captured_points: int
    expires_at: datetime
    txn_id: int  # of the hold's latest change
    rule_version: int
    clawed_back_points: int = 0  # taken back by refunds (views stored before: 0)

    @classmethod
    def of(cls, row: HoldRow, state: HoldState, captured: int, txn_id: int) -> HoldView:
        return cls(
            row.member_id,
            row.hold_id,
            row.points,
            state,
            captured,
            row.expires_at,
            txn_id,
            row.rule_version,
            row.clawed_back_points,
        )

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in vars(self).items() if k != "expires_at"}
        return doc | {"expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> HoldView:
        when = datetime.fromisoformat(doc["expires_at"])
        return cls(**(doc | {"expires_at": when, "state": HoldState(doc["state"])}))


@dataclass(frozen=True)
class RedemptionResult:
    member_id: str
    request_id: str
    points: int
    txn_id: int
    rule_version: int
    lots: tuple[LotTaken, ...]  # spending order

    @classmethod
    def of(
        cls,
        request: RedeemRequest,
        txn_id: int,
        version: int,
        taken: Sequence[Taken],
    ) -> RedemptionResult:
        lots = tuple(LotTaken(t.lot.lot_id, t.points, t.lot.expires_at) for t in taken)
        return cls(request.member_id, request.request_id, request.points, txn_id, version, lots)

    def to_json(self) -> dict[str, Any]:
        lots = [lot.to_json() for lot in self.lots]
        return {k: v for k, v in vars(self).items() if k != "lots"} | {"lots": lots}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RedemptionResult:
        lots = tuple(LotTaken.from_json(lot) for lot in doc["lots"])
        return cls(**(doc | {"lots": lots}))

    def explanation(self) -> dict[str, Any]:
        steps = [
            step(SpendingStep.TAKE, p, f"{p} from lot {lot_id} (expires {at.isoformat()})")
            for lot_id, p, at in self.lots
        ]
        return {
            "kind": TransactionKind.REDEMPTION,
            "rule_version": self.rule_version,
            "request_id": self.request_id,
            "steps": steps,
            "points": self.points,
            "sentence": f"Redeemed {self.points} points, soonest-expiring lots first: "
            + ", ".join(s["note"] for s in steps)
            + ".",
        }


def plan_take(lots: Sequence[SpendableLot], points: int) -> list[Taken]:
    """`points` from `lots` in the order given (spending order); less if they hold less."""
    rest, taken = points, []
    for lot in lots:
        part = min(rest, lot.remaining)
        if part > 0:
            taken.append(Taken(lot, part))
            rest -= part
    return taken


@dataclass(frozen=True)
class SettlePlan:
    """Where each lot's part of a hold goes (lists of (lot_id, points))."""

    captured: LotPoints  # member:held -> program:redeemed (for a hold: what it took)
    returned: LotPoints  # member:held -> member:available
    restored: LotPoints  # added back to the lots' remaining: `returned` less the repaid debt
    expired: LotPoints  # member:held -> program:expired: the lot expired while held
    repaid: int  # of `returned`, what repays the member's debt instead of refilling lots

    @property
    def returned_points(self) -> int:
        return sum(part.points for part in self.returned)


def plan_settle(lots: Sequence[HeldLot], capture: int, now: datetime, owed: int) -> SettlePlan:
    """The capture takes the soonest-expiring held points (`lots` are in spending order);
    the rest goes back to lots still usable, or expires with a lot that expired meanwhile.
    Points going back first repay a debt (allow_negative refund during the hold), as every
    new credit does (services/points/debt.py)."""
    rest = capture
    captured, returned, restored, expired = [], [], [], []
    for lot in lots:
        part = min(rest, lot.points)
        rest -= part
        if part:
            captured.append(LotPart(lot.lot_id, part))
        back = lot.points - part
        if back == 0:
            continue
        if lot.state == LotState.AVAILABLE and now < lot.expires_at:
            returned.append(LotPart(lot.lot_id, back))
            repay = min(owed, back)
            owed -= repay
            if back > repay:
                restored.append(LotPart(lot.lot_id, back - repay))
        else:
            expired.append(LotPart(lot.lot_id, back))
    repaid = sum(p.points for p in returned) - sum(p.points for p in restored)
    return SettlePlan(captured, returned, restored, expired, repaid)


def explanation(kind: TransactionKind, view: HoldView, plan: SettlePlan) -> dict[str, Any]:
    """Each lot's part as data, plus a readable sentence."""
    verb = SpendingStep.HELD if kind == TransactionKind.HOLD else SpendingStep.CAPTURED
    steps = [step(verb, p, f"{p} {verb} from lot {lot_id}") for lot_id, p in plan.captured]
    steps += [step(SpendingStep.RETURNED, p, f"{p} back to lot {i}") for i, p in plan.returned]
    steps += [
        step(SpendingStep.EXPIRED, p, f"{p} of lot {i} expired: the lot expired during the hold")
        for i, p in plan.expired
    ]
    if plan.repaid:
        steps.append(
            step(SpendingStep.DEBT_REPAID, plan.repaid, f"{plan.repaid} repaid the member's debt")
        )
    title = {
        TransactionKind.HOLD: f"Held {view.points} points until {view.expires_at.isoformat()}",
        TransactionKind.CAPTURE: f"Captured {view.captured_points} of {view.points} held points",
        TransactionKind.RELEASE: f"Released a hold of {view.points} points",
        TransactionKind.HOLD_EXPIRY: f"A hold of {view.points} points expired",
    }[kind]
    return {
        "kind": kind,
        "rule_version": view.rule_version,
        "hold": view.to_json(),
        "steps": steps,
        "points": view.points,
        "debt_repaid": plan.repaid,
        "sentence": title + (": " + ", ".join(s["note"] for s in steps) if steps else "") + ".",
    }
