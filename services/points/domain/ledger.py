"""The double-entry ledger every topic writes to (docs/design.md §6): its accounts, the kinds of its
transactions, the states of its lots, and the rows a change of a member's points writes.

`member:*` accounts belong to the member of the transfer row; `program:*` accounts are the
program's side, whose totals are sums over transfers (never a materialised hot row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Account(StrEnum):
    MEMBER_AVAILABLE = "member:available"
    MEMBER_PENDING = "member:pending"
    MEMBER_HELD = "member:held"
    ISSUED = "program:issued"
    REDEEMED = "program:redeemed"
    EXPIRED = "program:expired"
    # points clawed back by a refund that the member no longer had (within_balance policy)
    UNCOLLECTABLE = "program:uncollectable"
    ADJUSTMENT = "program:adjustment"


MEMBER_AVAILABLE = Account.MEMBER_AVAILABLE
MEMBER_PENDING = Account.MEMBER_PENDING
MEMBER_HELD = Account.MEMBER_HELD
ISSUED = Account.ISSUED
REDEEMED = Account.REDEEMED
EXPIRED = Account.EXPIRED
UNCOLLECTABLE = Account.UNCOLLECTABLE
ADJUSTMENT = Account.ADJUSTMENT

MEMBER_ACCOUNTS = (MEMBER_AVAILABLE, MEMBER_PENDING, MEMBER_HELD)
PROGRAM_ACCOUNTS = (ISSUED, REDEEMED, EXPIRED, UNCOLLECTABLE, ADJUSTMENT)


class TransactionKind(StrEnum):
    """points.transactions.kind; each kind's `points` means what reconcile.POINTS_MEANING says."""

    SETTLEMENT = "settlement"
    REFUND = "refund"
    MATURATION = "maturation"
    EXPIRY = "expiry"
    GRANT = "grant"
    REFERRAL = "referral"
    HOLD = "hold"
    CAPTURE = "capture"
    RELEASE = "release"
    HOLD_EXPIRY = "hold_expiry"
    REDEMPTION = "redemption"
    REWARD = "reward"


class LotState(StrEnum):
    """points.lots.state (migration 002)."""

    PENDING = "PENDING"  # in the return window
    AVAILABLE = "AVAILABLE"  # usable while now < expires_at
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"  # a pending lot refunded to nothing: it never matures


@dataclass(frozen=True)
class StoredTransaction:
    """What a repeat of a request needs of the transaction its key recorded."""

    txn_id: int
    kind: str
    request_hash: bytes
    result: dict[str, Any]


@dataclass(frozen=True)
class NewLot:
    lot_id: int
    txn_id: int
    state: LotState
    points: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime
    rule_version: int


@dataclass(frozen=True)
class NewTransfer:
    txn_id: int
    from_account: Account
    to_account: Account
    amount: int
    lot_id: int | None
    rule_version: int


@dataclass(frozen=True)
class NewTransaction:
    txn_id: int
    kind: TransactionKind
    idempotency_key: str
    request_hash: bytes
    rule_version: int
    points: int  # its meaning depends on the kind (domain/reconcile.py)
    result: dict[str, Any]
    explanation: dict[str, Any]


def step(name: str, value: int, note: str) -> dict[str, str]:
    """One step of a stored explanation."""
    return {"name": name, "value": str(value), "note": note}
