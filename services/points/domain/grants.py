"""GrantPoints, without SQL: points given for a reason (check-in, task, referral, goodwill),
available at once, in a lot of their own; the checks before anything is read, and what the
grant's transaction records."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.points.domain.ledger import NewTransaction, TransactionKind
from services.points.domain.rules import GrantReason, Rules
from services.runtime.errors import bad_field, permission_denied

ADMIN = "admin"
GRANT_NEEDS_ADMIN = "GRANT_NEEDS_ADMIN"
KIND = TransactionKind.GRANT


@dataclass(frozen=True)
class GrantRequest:
    member_id: str
    request_id: str
    points: int
    reason: GrantReason
    note: str
    expires_at: datetime | None  # None: the program's expiry rule

    @property
    def key(self) -> str:
        return f"{KIND}:{self.request_id}"

    def fingerprint(self) -> bytes:
        expires = self.expires_at.isoformat() if self.expires_at else ""
        canonical = [self.member_id, self.request_id, self.points, self.reason, self.note, expires]
        return hashlib.sha256(json.dumps(canonical).encode()).digest()


@dataclass(frozen=True)
class GrantResult:
    member_id: str
    request_id: str
    points: int
    reason: GrantReason
    expires_at: datetime
    rule_version: int
    txn_id: int
    debt_repaid: int

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GrantResult:
        when = datetime.fromisoformat(doc["expires_at"])
        return cls(**{**doc, "expires_at": when, "reason": GrantReason(doc["reason"])})


@dataclass(frozen=True)
class AvailableCredit:
    """Points credited to a locked member as a lot of their own, available at once
    (program:issued -> member:available), whose first points repay a debt: grants and
    referral bonuses."""

    member_id: str
    points: int
    available_before: int  # the member's available before the credit
    txn_id: int  # the transaction the caller records
    lot_id: int
    rule_version: int
    now: datetime
    expires_at: datetime


def check_allowed(rules: Rules, role: str, request: GrantRequest, now: datetime) -> None:
    """Caps per reason; large goodwill needs the admin role (`role`: the caller's). Raises
    before anything is read."""
    rule = rules.grants[request.reason]
    if request.points > rule.max_points:
        raise bad_field("points", f"at most {rule.max_points} points for {request.reason}")
    if rule.admin_above is not None and request.points > rule.admin_above and role != ADMIN:
        raise permission_denied(
            GRANT_NEEDS_ADMIN,
            f"{request.reason} grants above {rule.admin_above} points need the admin role",
        )
    if request.expires_at is not None and request.expires_at <= now:
        raise bad_field("expire_time", "must be in the future")


def transaction_of(request: GrantRequest, result: GrantResult) -> NewTransaction:
    """The grant's transaction: its result for repeats, and the explanation."""
    sentence = (
        f"{request.points} points granted for {request.reason.lower().replace('_', ' ')}"
        f", expiring {result.expires_at.isoformat()}"
        + (f"; {result.debt_repaid} of them repaid earlier refunds" if result.debt_repaid else "")
    )
    explanation = {
        "kind": KIND,
        "reason": request.reason,
        "note": request.note,
        "points": request.points,
        "debt_repaid": result.debt_repaid,
        "steps": [],
        "sentence": sentence,
    }
    return NewTransaction(
        txn_id=result.txn_id,
        kind=KIND,
        idempotency_key=request.key,
        request_hash=request.fingerprint(),
        rule_version=result.rule_version,
        points=request.points,
        result=result.to_json(),
        explanation=explanation,
    )
