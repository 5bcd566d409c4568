"""A member's ledger history (ListTransactions) and how each transaction came about
(ExplainTransaction), without SQL: the stored rows, what caused each (its idempotency key's
prefix), and the explanation each transaction stored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.runtime.errors import bad_field


@dataclass(frozen=True)
class TransactionRow:
    txn_id: int
    kind: str
    idempotency_key: str
    rule_version: int
    points: int
    created_at: datetime
    explanation: dict[str, Any]


@dataclass(frozen=True)
class TransferRow:
    txn_id: int
    from_account: str
    to_account: str
    amount: int
    lot_id: int | None
    rule_version: int


@dataclass(frozen=True)
class Window:
    """Which of a member's transactions: kinds (empty = all), [start, end) and after a
    position (created_at, txn_id) of the previous page, newest first."""

    kinds: Sequence[str]
    start: datetime | None
    end: datetime | None
    after: tuple[datetime, int] | None


# the idempotency key's prefix -> the id it wraps (`payment:p-1` is payment_id p-1)
REFERENCE_TYPES = {
    "payment": "payment_id",
    "refund": "refund_id",
    "maturation": "lot_id",
    "expiry": "lot_id",
    "grant": "request_id",
    "hold": "hold_id",
    "capture": "capture_id",
    "release": "request_id",
    "hold_expiry": "hold_id",
    "redeem": "request_id",
    "reward": "request_id",
    "referral": "member_id",  # the referred member, in both members' ledgers
}
MAX_KINDS = 20
MAX_KIND_LEN = 40


@dataclass(frozen=True)
class Reference:
    type: str
    value: str


@dataclass(frozen=True)
class Entry:
    """One transaction as ListTransactions shows it."""

    member_id: str
    row: TransactionRow
    reference: Reference
    transfers: tuple[TransferRow, ...]


@dataclass(frozen=True)
class Step:
    name: str
    value: str
    note: str


@dataclass(frozen=True)
class Explanation:
    member_id: str
    txn_id: int
    kind: str
    points: int
    rule_version: int
    steps: tuple[Step, ...]
    sentence: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Query:
    member_id: str
    kinds: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    page_size: int
    page_token: str


def reference_of(idempotency_key: str) -> Reference:
    """What caused a transaction, from its idempotency key (`<prefix>:<id>`)."""
    prefix, sep, value = idempotency_key.partition(":")
    if sep and prefix in REFERENCE_TYPES:
        return Reference(REFERENCE_TYPES[prefix], value)
    # a key of a kind added later: shown whole rather than guessed at
    return Reference("idempotency_key", idempotency_key)


def steps_of(explanation: dict[str, Any]) -> tuple[Step, ...]:
    raw = explanation.get("steps")
    if not isinstance(raw, list):
        return ()
    return tuple(
        Step(str(s.get("name", "")), str(s.get("value", "")), str(s.get("note", "")))
        for s in raw
        if isinstance(s, dict)
    )


def validate_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if len(kinds) > MAX_KINDS:
        raise bad_field("kinds", f"at most {MAX_KINDS} kinds")
    for kind in kinds:
        if not (0 < len(kind) <= MAX_KIND_LEN and kind.replace("_", "").isalnum()):
            raise bad_field("kinds", "each kind is a lower-case word such as `settlement`")
    return tuple(kinds)


def entry_of(member_id: str, row: TransactionRow, transfers: Sequence[TransferRow]) -> Entry:
    mine = tuple(t for t in transfers if t.txn_id == row.txn_id)
    return Entry(member_id, row, reference_of(row.idempotency_key), mine)


def explanation_of(member_id: str, row: TransactionRow) -> Explanation:
    doc = row.explanation
    return Explanation(
        member_id,
        row.txn_id,
        row.kind,
        row.points,
        row.rule_version,
        steps_of(doc),
        str(doc.get("sentence", "")),
        doc,
    )
