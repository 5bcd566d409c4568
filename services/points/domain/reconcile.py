"""Reconcile: the invariants of the points ledger (docs/design.md §6) and the report of a check.

Each invariant is one set-based query (services/points/store/reconcile.py), run together in
one read-only REPEATABLE READ transaction (services/points/reconcile.py): every query sees
the same snapshot, so a settlement committing in the middle of a check cannot show up as a
false mismatch.

What a transaction's `points` column means depends on its kind (read from the code that
writes it); `POINTS_MEANING` names, per kind, the member accounts whose net inflow in that
transaction's transfers must equal it:

- settlement: what was awarded: program:issued -> member:pending|available (a pending lot's
  debt repayment, pending -> available, is internal to the member and nets to 0);
- refund: minus what was taken from the member (lots, holds, or below zero); the write-off
  program:uncollectable -> program:issued moves no member account;
- maturation: what became available (pending -> available, as `available` sees it);
- expiry: minus what was forfeited (available -> program:expired);
- grant: what was granted (program:issued -> member:available).

- hold, capture, release, hold_expiry, redemption: the change of `available`.

Kinds not listed (added later) are still checked for orphaned transfers,
rule versions and keys, but not for their points until their meaning is added here.

The books close (PROGRAM_TOTAL): every transfer takes from one account what it gives to
another, so over the eight known accounts, per member and hence program-wide,

    -net(program:issued) == net(member:available) + net(member:pending) + net(member:held)
                            + net(program:redeemed) + net(program:expired)
                            + net(program:uncollectable) + net(program:adjustment)

with net = inflow - outflow. It fails exactly when points moved to or from an account outside
that list, i.e. out of the books. BALANCE_MISMATCH ties the member nets to the materialised
balances, so together they prove the identity with the balances members see.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from services.points.domain.ledger import (
    MEMBER_ACCOUNTS,
    MEMBER_AVAILABLE,
    MEMBER_HELD,
    MEMBER_PENDING,
    PROGRAM_ACCOUNTS,
    Account,
    TransactionKind,
)


@dataclass(frozen=True)
class Found:
    member_id: str
    detail: str


@dataclass(frozen=True)
class Counts:
    members: int
    transactions: int
    transfers: int
    lots: int


# the response lists at most this many violations (and counts them all)
MAX_VIOLATIONS = 1000

KNOWN_ACCOUNTS: tuple[Account, ...] = MEMBER_ACCOUNTS + PROGRAM_ACCOUNTS

POINTS_MEANING: dict[TransactionKind, tuple[Account, ...]] = {
    TransactionKind.SETTLEMENT: (MEMBER_AVAILABLE, MEMBER_PENDING),
    # a refund also takes back points open holds hold (domain/clawback.py)
    TransactionKind.REFUND: (MEMBER_AVAILABLE, MEMBER_PENDING, MEMBER_HELD),
    TransactionKind.MATURATION: (MEMBER_AVAILABLE,),
    TransactionKind.EXPIRY: (MEMBER_AVAILABLE,),
    # a grant's points arrive available at once (a debt repayment shrinks only the lot)
    TransactionKind.GRANT: (MEMBER_AVAILABLE,),
    TransactionKind.REFERRAL: (MEMBER_AVAILABLE,),
    # spending (services/points/spending.py): `points` is the change of `available`; a
    # hold's available -> held is minus what it holds, a capture, release or hold expiry
    # gives back to available what it returns, a redemption is minus what it spends
    TransactionKind.HOLD: (MEMBER_AVAILABLE,),
    TransactionKind.CAPTURE: (MEMBER_AVAILABLE,),
    TransactionKind.RELEASE: (MEMBER_AVAILABLE,),
    TransactionKind.HOLD_EXPIRY: (MEMBER_AVAILABLE,),
    TransactionKind.REDEMPTION: (MEMBER_AVAILABLE,),
    TransactionKind.REWARD: (MEMBER_AVAILABLE,),  # a reward redemption: minus the points it spent
}


class Invariant(StrEnum):
    TRANSFER_INVALID = "TRANSFER_INVALID"
    TRANSFER_ORPHAN = "TRANSFER_ORPHAN"
    UNKNOWN_RULE_VERSION = "UNKNOWN_RULE_VERSION"
    BALANCE_MISMATCH = "BALANCE_MISMATCH"
    LOTS_MISMATCH = "LOTS_MISMATCH"
    LOT_OVERDRAWN = "LOT_OVERDRAWN"
    BELOW_FLOOR = "BELOW_FLOOR"
    DUPLICATE_KEY = "DUPLICATE_KEY"
    PROGRAM_TOTAL = "PROGRAM_TOTAL"


@dataclass(frozen=True)
class Violation:
    invariant: Invariant
    member_id: str  # "" when it concerns the program as a whole
    detail: str


@dataclass(frozen=True)
class Report:
    counts: Counts
    violations: tuple[Violation, ...]  # at most MAX_VIOLATIONS
    total: int  # every violation found, listed or not

    @property
    def ok(self) -> bool:
        return self.total == 0
