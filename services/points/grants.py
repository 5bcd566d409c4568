"""GrantPoints: points given for a reason (check-in, task, referral, goodwill), available at
once, in a lot of their own, exactly once per (member, request_id)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.points import debt, metrics
from services.points.domain import grants
from services.points.domain.debt import Repayment, repaid_by
from services.points.domain.earning import expires_at
from services.points.domain.grants import AvailableCredit, GrantRequest, GrantResult
from services.points.domain.ledger import ISSUED, MEMBER_AVAILABLE, LotState, NewLot, NewTransfer
from services.points.domain.members import ACTIVE, member_not_active
from services.points.domain.rules import RulesInForce
from services.points.domain.settlement import Locked
from services.points.domain.unknown_members import member_unknown
from services.points.store import balance as balance_store
from services.points.store import ledger as ledger_store
from services.points.store import settlement as settlement_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import idempotency_key_reused
from services.runtime.identity import Caller


async def credit_available(conn: Conn, credit: AvailableCredit) -> int:
    """Writes the credit's lot, transfer and balance, and repays the member's debt from the
    lot's first points; returns the repaid part."""
    member_id, points, version = credit.member_id, credit.points, credit.rule_version
    txn_id, lot_id = credit.txn_id, credit.lot_id
    lot = NewLot(
        lot_id,
        txn_id,
        LotState.AVAILABLE,
        points,
        credit.now,
        credit.now,
        credit.expires_at,
        version,
    )
    await ledger_store.insert_lot(conn, member_id, lot)
    move = NewTransfer(txn_id, ISSUED, MEMBER_AVAILABLE, points, lot_id, version)
    await ledger_store.insert_transfers(conn, member_id, [move])
    await balance_store.add_to_balance(conn, member_id, available=points, earned=points)
    repaid = repaid_by(points, credit.available_before)
    repayment = Repayment(txn_id=txn_id, lot_id=lot_id, points=repaid, pending=False)
    await debt.repay_from_new_lot(conn, member_id, repayment, version)
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
        grants.check_allowed(self._rules.rules, caller.role, request, now)
        credited: list[bool] = []
        result = await in_transaction(
            self._pool, lambda conn: self._grant_in(conn, request, now, credited)
        )
        if credited:  # committed, and not the answer to a repeat
            metrics.POINTS_ISSUED.labels(metrics.ISSUED_BY_GRANT).inc(result.points)
        return result

    async def _grant_in(
        self, conn: Conn, request: GrantRequest, now: datetime, credited: list[bool]
    ) -> GrantResult:
        credited.clear()  # a retried transaction starts over
        floor = self._rules.rules.available_floor
        locked = await settlement_store.lock_known_member(conn, request.member_id, floor)
        if locked is None:
            raise member_unknown()
        seen = await settlement_store.read_under_lock(
            conn, request.member_id, key=request.key, day=now.date()
        )
        if seen.prior is not None:
            if seen.prior.request_hash != request.fingerprint():
                raise idempotency_key_reused()
            return GrantResult.from_json(seen.prior.document())
        if seen.state != ACTIVE:
            raise member_not_active(seen.state, "cannot receive points")
        credited.append(True)
        return await self._credit(conn, request, locked, now)

    async def _credit(
        self, conn: Conn, request: GrantRequest, locked: Locked, now: datetime
    ) -> GrantResult:
        version = self._rules.version
        expires = request.expires_at or expires_at(self._rules.rules, now)
        credit = AvailableCredit(
            member_id=request.member_id,
            points=request.points,
            available_before=locked.available,
            txn_id=locked.ids.txn_id,
            lot_id=locked.ids.lot_id,
            rule_version=version,
            now=now,
            expires_at=expires,
        )
        repaid = await credit_available(conn, credit)
        result = GrantResult(
            request.member_id,
            request.request_id,
            request.points,
            request.reason,
            expires,
            version,
            locked.ids.txn_id,
            repaid,
        )
        txn = grants.transaction_of(request, result)
        await ledger_store.insert_transaction(conn, request.member_id, txn)
        return result
