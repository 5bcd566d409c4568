"""GrantPoints: points given for a reason (check-in, task, referral, goodwill), available at
once, in a lot of their own, exactly once per (member, request_id)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.points import debt, earn, metrics
from services.points.ledger import RulesInForce
from services.points.ledger_accounts import ISSUED, MEMBER_AVAILABLE
from services.points.store import ledger as store
from services.points.store import settlement as fast
from services.points.unknown_members import member_unknown
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import (
    bad_field,
    failed_precondition,
    idempotency_key_reused,
    permission_denied,
)
from services.runtime.identity import Caller

ADMIN = "admin"


@dataclass(frozen=True)
class GrantRequest:
    member_id: str
    request_id: str
    points: int
    reason: str  # CHECK_IN, TASK, REFERRAL, GOODWILL
    note: str
    expires_at: datetime | None  # None: the program's expiry rule

    @property
    def key(self) -> str:
        return f"grant:{self.request_id}"

    def fingerprint(self) -> bytes:
        expires = self.expires_at.isoformat() if self.expires_at else ""
        canonical = [self.member_id, self.request_id, self.points, self.reason, self.note, expires]
        return hashlib.sha256(json.dumps(canonical).encode()).digest()


@dataclass(frozen=True)
class GrantResult:
    member_id: str
    request_id: str
    points: int
    reason: str
    expires_at: datetime
    rule_version: int
    txn_id: int
    debt_repaid: int

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GrantResult:
        return cls(**{**doc, "expires_at": datetime.fromisoformat(doc["expires_at"])})


def check_allowed(
    rules: RulesInForce, caller: Caller, request: GrantRequest, now: datetime
) -> None:
    """Caps per reason; large goodwill needs the admin role. Raises before anything is read."""
    rule = rules.rules.grants[request.reason]
    if request.points > rule.max_points:
        raise bad_field("points", f"at most {rule.max_points} points for {request.reason}")
    if rule.admin_above is not None and request.points > rule.admin_above and caller.role != ADMIN:
        raise permission_denied(
            "GRANT_NEEDS_ADMIN",
            f"{request.reason} grants above {rule.admin_above} points need the admin role",
        )
    if request.expires_at is not None and request.expires_at <= now:
        raise bad_field("expire_time", "must be in the future")


async def credit_available(
    conn: Conn,
    member_id: str,
    points_available: tuple[int, int],
    ids: tuple[int, int],
    version: int,
    at: tuple[datetime, datetime],
) -> int:
    """Credits `points` to a locked member as a lot of their own, available at once
    (program:issued -> member:available), whose first points repay a debt; the caller
    records the transaction `ids[0]`. `points_available`: the points, and the member's
    available before the credit. `at`: now and the lot's expiry. Returns the repaid part."""
    (points, available), (txn_id, lot_id), (now, expires_at) = (
        points_available,
        ids,
        at,
    )
    lot = store.NewLot(lot_id, txn_id, "AVAILABLE", points, now, now, expires_at, version)
    await store.insert_lot(conn, member_id, lot)
    move = store.NewTransfer(txn_id, ISSUED, MEMBER_AVAILABLE, points, lot_id, version)
    await store.insert_transfers(conn, member_id, [move])
    await store.add_to_balance(conn, member_id, available=points, earned=points)
    repaid = min(max(0, -available), points)
    await debt.repay_from_new_lot(conn, member_id, (txn_id, lot_id), repaid, False, version)
    return repaid


class Grants:
    def __init__(
        self, pool: asyncpg.Pool, rules: RulesInForce, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._clock = clock

    async def grant(self, caller: Caller, request: GrantRequest) -> GrantResult:
        now = self._clock()
        check_allowed(self._rules, caller, request, now)
        credited: list[bool] = []
        result = await in_transaction(
            self._pool, lambda conn: self._grant_in(conn, request, now, credited)
        )
        if credited:  # committed, and not the answer to a repeat
            metrics.POINTS_ISSUED.labels("grant").inc(result.points)
        return result

    async def _grant_in(
        self, conn: Conn, request: GrantRequest, now: datetime, credited: list[bool]
    ) -> GrantResult:
        credited.clear()  # a retried transaction starts over
        rules = self._rules.rules
        floor = -rules.negative_floor if rules.refund_policy == "allow_negative" else 0
        locked = await fast.lock_known_member(conn, request.member_id, floor)
        if locked is None:
            raise member_unknown()
        seen = await fast.read_under_lock(conn, request.member_id, request.key, now.date())
        if seen.request_hash is not None and seen.result is not None:
            if seen.request_hash != request.fingerprint():
                raise idempotency_key_reused()
            return GrantResult.from_json(seen.result)
        if seen.state != "ACTIVE":
            raise failed_precondition(
                f"MEMBER_{seen.state}", f"a {seen.state} member cannot receive points"
            )
        credited.append(True)
        return await self._credit(conn, request, locked, now)

    async def _credit(
        self, conn: Conn, request: GrantRequest, locked: fast.Locked, now: datetime
    ) -> GrantResult:
        version = self._rules.version
        expires_at = request.expires_at or earn.expires_at(self._rules.rules, now)
        ids = (locked.txn_id, locked.lot_id)
        repaid = await credit_available(
            conn,
            request.member_id,
            (request.points, locked.available),
            ids,
            version,
            (now, expires_at),
        )
        result = GrantResult(
            request.member_id,
            request.request_id,
            request.points,
            request.reason,
            expires_at,
            version,
            locked.txn_id,
            repaid,
        )
        await self._record(conn, request, result)
        return result

    async def _record(self, conn: Conn, request: GrantRequest, result: GrantResult) -> None:
        sentence = (
            f"{request.points} points granted for {request.reason.lower().replace('_', ' ')}"
            f", expiring {result.expires_at.isoformat()}"
            + (
                f"; {result.debt_repaid} of them repaid earlier refunds"
                if result.debt_repaid
                else ""
            )
        )
        explanation = {
            "kind": "grant",
            "reason": request.reason,
            "note": request.note,
            "points": request.points,
            "debt_repaid": result.debt_repaid,
            "steps": [],
            "sentence": sentence,
        }
        await store.insert_transaction(
            conn,
            request.member_id,
            store.NewTransaction(
                result.txn_id,
                "grant",
                request.key,
                request.fingerprint(),
                result.rule_version,
                request.points,
                result.to_json(),
                explanation,
            ),
        )
