"""The background jobs of points, without SQL: their names, what a batch reports, and what
the lot jobs (maturation, expiry) do to each due lot (services/points/jobs.py runs them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from services.points.domain.debt import owed
from services.points.domain.ledger import (
    EXPIRED,
    MEMBER_AVAILABLE,
    MEMBER_PENDING,
    Account,
    LotState,
    TransactionKind,
)

DEFAULT_BATCH_SIZE = 500
# a run stops after this many batches even if work is left; the next run goes on
DEFAULT_MAX_BATCHES = 40
# a member id refused for good is kept this long after its last refusal (for the metric and
# for a caller that still retries it); a later write for it starts a new grace period
UNKNOWN_MEMBER_RETENTION = timedelta(days=30)


class JobName(StrEnum):
    """The jobs, in the order a run does them (jobs.JOBS); also their advisory lock keys."""

    MATURATION = "maturation"
    HOLD_EXPIRY = "hold_expiry"
    EXPIRY = "expiry"
    TIER_REVIEW = "tier_review"
    REFERRAL_BONUS = "referral_bonus"
    UNKNOWN_MEMBER_PURGE = "unknown_member_purge"
    COUPON_EXPIRY = "coupon_expiry"
    CAMPAIGN_COUPONS = "campaign_coupons"


@dataclass(frozen=True)
class DueLot:
    member_id: str
    lot_id: int
    txn_id: int  # the transaction that earned the lot
    points: int
    remaining: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    rule_version: int


@dataclass(frozen=True)
class LotMove:
    """One lot's change of state, and the transfer and transaction that record it."""

    lot: DueLot
    txn_id: int
    transfer_id: int
    kind: TransactionKind
    idempotency_key: str
    from_account: Account
    to_account: Account
    new_state: LotState
    new_remaining: int  # below the lot's remaining when maturing points repay a debt
    signed_points: int  # the transaction's points, as the member's available sees them
    result: dict[str, Any]
    explanation: dict[str, Any]


class LotKey(NamedTuple):
    member_id: str
    lot_id: int


class BalanceDelta(NamedTuple):
    available: int
    pending: int


# member_id -> the change of its balance
BalanceDeltas = dict[str, BalanceDelta]


@dataclass(frozen=True)
class BatchResult:
    seen: int  # candidates found: fewer than the limit means nothing more is due
    done: int  # items changed
    forfeited: int = 0  # points that expired
    issued: int = 0  # points credited (referral bonuses)


@dataclass(frozen=True)
class JobLimits:
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batches: int = DEFAULT_MAX_BATCHES


@dataclass(frozen=True)
class JobReport:
    job: str
    done: int
    batches: int
    skipped: bool  # another runner held the job's lock
    more_left: bool  # stopped at max_batches with work still due

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "done": self.done,
            "batches": self.batches,
            "skipped": self.skipped,
            "more_left": self.more_left,
        }


@dataclass(frozen=True)
class LotChange:
    """What a lot job does to each due lot."""

    kind: TransactionKind  # also the job name and the idempotency key prefix
    from_account: Account
    to_account: Account
    new_state: LotState
    # (available, pending) change of the balance per point moved
    balance_sign: tuple[int, int]
    sentence: str  # with {points}, {lot_id} and {date}
    date_of: Callable[[DueLot], datetime] = field(repr=False)
    # a matured lot keeps its points (less what repays a debt); an expired one keeps none
    keeps_points: bool = True


MATURATION = LotChange(
    TransactionKind.MATURATION,
    MEMBER_PENDING,
    MEMBER_AVAILABLE,
    LotState.AVAILABLE,
    (1, -1),
    "The return window of lot {lot_id} ended at {date}: {points} points became available.",
    lambda lot: lot.available_at,
)
EXPIRY = LotChange(
    TransactionKind.EXPIRY,
    MEMBER_AVAILABLE,
    EXPIRED,
    LotState.EXPIRED,
    (-1, 0),
    "Lot {lot_id} expired at {date}: its {points} unspent points were forfeited.",
    lambda lot: lot.expires_at,
    keeps_points=False,
)


def lot_move(
    change: LotChange, lot: DueLot, now: datetime, *, txn_id: int, transfer_id: int, repaid: int
) -> LotMove:
    """The lot's move, recorded by transaction `txn_id` with transfer `transfer_id`;
    `repaid`: what of its points repays the member's debt."""
    date = change.date_of(lot).isoformat()
    lot_doc = {
        "lot_id": lot.lot_id,
        "earned_by_txn_id": lot.txn_id,
        "points": lot.points,
        "remaining": lot.remaining,
        "earned_at": lot.earned_at.isoformat(),
        "available_at": lot.available_at.isoformat(),
        "expires_at": lot.expires_at.isoformat(),
    }
    sentence = change.sentence.format(points=lot.remaining, lot_id=lot.lot_id, date=date)
    if repaid:
        sentence += f" The first {repaid} of them repaid the member's negative balance."
    result = {"lot_id": lot.lot_id, "points": lot.remaining, "state": change.new_state}
    result |= {"from": change.from_account, "to": change.to_account, "run_at": now.isoformat()}
    explanation = {
        "kind": change.kind,
        "rule_version": lot.rule_version,
        "lot": lot_doc,
        "run_at": now.isoformat(),
        "steps": [{"name": change.kind, "value": str(lot.remaining), "note": sentence}],
        "points": lot.remaining,
        "debt_repaid": repaid,
        "sentence": sentence,
    }
    return LotMove(
        lot,
        txn_id,
        transfer_id,
        change.kind,
        f"{change.kind}:{lot.lot_id}",
        change.from_account,
        change.to_account,
        change.new_state,
        lot.remaining - repaid if change.keeps_points else 0,
        # as the member's available balance sees it: matured points arrive, expired leave
        lot.remaining * change.balance_sign[0],
        result,
        explanation,
    )


def balance_deltas(change: LotChange, lots: Sequence[DueLot]) -> BalanceDeltas:
    deltas: BalanceDeltas = {}
    for lot in lots:
        available, pending = deltas.get(lot.member_id, (0, 0))
        deltas[lot.member_id] = BalanceDelta(
            available + change.balance_sign[0] * lot.remaining,
            pending + change.balance_sign[1] * lot.remaining,
        )
    return deltas


def repayments(change: LotChange, lots: Sequence[DueLot], available: dict[str, int]) -> list[int]:
    """How much of each lot repays its member's debt (allow_negative policy).

    Debt is `-available` when negative, and no available lot may hold points while there is
    one (domain/debt.py): maturing points pay it off first, lot by lot."""
    debts = {member: owed(points) for member, points in available.items()}
    repaid = []
    for lot in lots:
        part = min(lot.remaining, debts.get(lot.member_id, 0)) if change.keeps_points else 0
        debts[lot.member_id] = debts.get(lot.member_id, 0) - part
        repaid.append(part)
    return repaid
