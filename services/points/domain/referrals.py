"""The referral bonus, without SQL: who is due what when a referee's first settlement made
the bonus due, and what each side's transaction records (services/points/referrals.py pays
it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from services.points.domain.ledger import NewTransaction, TransactionKind
from services.points.domain.members import ACTIVE
from services.points.domain.rules import Rules

KIND = TransactionKind.REFERRAL
UNKNOWN = "UNKNOWN"  # the state of a side points does not know


@dataclass(frozen=True)
class DueReferral:
    member_id: str  # the referee
    referrer_id: str
    payment_id: str
    rule_version: int


class PaidReferral(NamedTuple):
    """A referral row once paid: the points each side received (0: forfeited)."""

    member_id: str  # the referee
    referee_points: int
    referrer_points: int


class Role(StrEnum):
    REFEREE = "referee"
    REFERRER = "referrer"


class Side(NamedTuple):
    role: Role
    member_id: str
    points: int  # what it is due
    skipped: str | None  # the member's state when it forfeits the bonus (not ACTIVE)


def sides(rules: Rules, row: DueReferral, states: dict[str, str]) -> list[Side]:
    """Referee first, then referrer; a side not ACTIVE (or unknown) forfeits its bonus."""

    def side(role: Role, member_id: str, points: int) -> Side:
        state = states.get(member_id, UNKNOWN)
        return Side(role, member_id, points, None if state == ACTIVE else state)

    return [
        side(Role.REFEREE, row.member_id, rules.referral_bonus_referee),
        side(Role.REFERRER, row.referrer_id, rules.referral_bonus_referrer),
    ]


@dataclass(frozen=True)
class BonusCredit:
    """One side's credit, as its transaction records it."""

    row: DueReferral
    side: Side
    txn_id: int
    expires_at: datetime
    repaid: int  # of the points, what repaid the member's debt


def referral_key(referee_id: str) -> str:
    return f"{KIND}:{referee_id}"


def transaction_of(credit: BonusCredit, sides: Sequence[Side]) -> NewTransaction:
    row, side = credit.row, credit.side
    key = referral_key(row.member_id)
    result = {
        "member_id": side.member_id,
        "role": side.role,
        "referee": row.member_id,
        "referrer": row.referrer_id,
        "payment_id": row.payment_id,
        "points": side.points,
        "expires_at": credit.expires_at.isoformat(),
        "rule_version": row.rule_version,
        "txn_id": credit.txn_id,
        "debt_repaid": credit.repaid,
    }
    return NewTransaction(
        txn_id=credit.txn_id,
        kind=KIND,
        idempotency_key=key,
        request_hash=hashlib.sha256(key.encode()).digest(),
        rule_version=row.rule_version,
        points=side.points,
        result=result,
        explanation=explanation(row, side, sides, credit.repaid),
    )


def explanation(row: DueReferral, side: Side, sides: Sequence[Side], repaid: int) -> dict[str, Any]:
    role, points = side.role, side.points
    sentence = (
        f"{points} points of referral bonus as the {role}: members/{row.member_id}"
        f" (referred by members/{row.referrer_id}) settled its first payment {row.payment_id}"
    )
    if repaid:
        sentence += f"; {repaid} of them repaid earlier refunds"
    skipped = [
        {"role": s.role, "member_id": s.member_id, "state": s.skipped}
        for s in sides
        if s.skipped is not None
    ]
    for other in skipped:
        sentence += f"; the {other['role']} was {other['state']} and received no bonus"
    return {
        "kind": KIND,
        "role": role,
        "referee": row.member_id,
        "referrer": row.referrer_id,
        "payment_id": row.payment_id,
        "points": points,
        "debt_repaid": repaid,
        "skipped": skipped,
        "steps": [],
        "sentence": sentence,
    }
