"""Spending points: holds (HoldPoints -> CapturePoints / ReleaseHold / expiry) and the
one-step RedeemPoints.

A hold moves points member:available -> member:held, taken from the member's usable lots
soonest-expiring first (their `remaining` shrinks); `points.hold_lots` records which lots,
so the hold is later settled against exactly those. Settling a hold (capture, release or
expiry, at most once: the hold row's state guards it) moves each lot's part:

- captured: member:held -> program:redeemed;
- given back to a lot still usable (`now < expires_at`): member:held -> member:available,
  and the lot's `remaining` grows again (less what repays a debt, domain/debt.py);
- given back to a lot that expired meanwhile: member:held -> program:expired at once.

So `held == sum of open holds` and `available + debt == sum(remaining of AVAILABLE lots)`
hold throughout. A redemption is a hold captured in the same transaction:
member:available -> program:redeemed per lot. Every change is one points.transactions row,
keyed `hold:`, `capture:`, `release:`, `redeem:` or `hold_expiry:`, with one transfer per lot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.points import metrics
from services.points.domain.jobs import BatchResult
from services.points.domain.ledger import (
    EXPIRED,
    MEMBER_AVAILABLE,
    MEMBER_HELD,
    REDEEMED,
    Account,
    NewTransaction,
    NewTransfer,
    TransactionKind,
)
from services.points.domain.members import ACTIVE, member_not_active
from services.points.domain.rules import RulesInForce
from services.points.domain.spending import (
    CAPTURE_EXCEEDS_HOLD,
    HOLD_EXPIRED,
    KEY_FIELD,
    KIND_OF_STATE,
    CaptureRequest,
    HoldRequest,
    HoldRow,
    HoldState,
    HoldView,
    LotPart,
    LotPoints,
    RedeemRequest,
    RedemptionResult,
    ReleaseRequest,
    SettlePlan,
    Settling,
    Taken,
    explanation,
    hold_not_held,
    insufficient_points,
    plan_settle,
    plan_take,
)
from services.points.domain.unknown_members import member_unknown
from services.points.members import MemberDirectory
from services.points.restrictions import refuse_if_restricted
from services.points.store import balance as balance_store
from services.points.store import ledger as ledger_store
from services.points.store import spending as spending_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import failed_precondition, idempotency_key_reused, not_found


async def _replay(
    conn: Conn, member_id: str, key: str, fingerprint: bytes
) -> dict[str, Any] | None:
    done = await ledger_store.find_transaction(conn, member_id, key)
    if done is None:
        return None
    if done.request_hash != fingerprint:
        raise idempotency_key_reused(KEY_FIELD.get(key.partition(":")[0], "request_id"))
    return done.result


async def settle_hold(conn: Conn, hold: HoldRow, how: Settling) -> HoldView:
    """Closes a HELD hold whose member's balance row is locked; writes one transaction."""
    lots = await spending_store.lock_held_lots(conn, hold.member_id, hold.hold_id)
    owed = await balance_store.debt_of(conn, hold.member_id)
    plan = plan_settle(lots, how.captured, how.now, owed)
    txn_id = (await ledger_store.next_ids(conn, 1))[0]
    transfers = [
        NewTransfer(txn_id, MEMBER_HELD, to, points, lot_id, how.version)
        for to, moved in ((REDEEMED, plan.captured), (MEMBER_AVAILABLE, plan.returned))
        for lot_id, points in moved
    ] + [
        NewTransfer(txn_id, MEMBER_HELD, EXPIRED, points, lot_id, how.version)
        for lot_id, points in plan.expired
    ]
    await ledger_store.insert_transfers(conn, hold.member_id, transfers)
    await spending_store.change_lots(conn, hold.member_id, plan.restored)
    await spending_store.add_to_balance(
        conn, hold.member_id, available=plan.returned_points, held=-hold.points
    )
    await spending_store.close_hold(
        conn, hold, how.state, captured=how.captured, txn_id=txn_id, at=how.now
    )
    view = HoldView.of(hold, how.state, how.captured, txn_id)
    kind = KIND_OF_STATE[how.state]
    txn = NewTransaction(
        txn_id=txn_id,
        kind=kind,
        idempotency_key=how.key,
        request_hash=how.fingerprint,
        rule_version=how.version,
        points=plan.returned_points,
        result=view.to_json(),
        explanation=explanation(kind, view, plan),
    )
    await ledger_store.insert_transaction(conn, hold.member_id, txn)
    return view


async def expire_due_holds(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """The hold_expiry job's batch: HELD holds past expires_at are released back to their
    lots. Balances are locked first, in sorted member order (as every batch locks them),
    then each hold."""
    keys = await spending_store.due_holds(conn, now, limit)
    if not keys:
        return BatchResult(0, 0)
    await balance_store.lock_balances(conn, [k.member_id for k in keys])
    expired = 0
    for member_id, hold_id in sorted(keys):
        hold = await spending_store.lock_hold(conn, member_id, hold_id)
        if hold is None or hold.state != HoldState.HELD or hold.expires_at > now:
            continue  # settled meanwhile by a capture or release
        key = f"{TransactionKind.HOLD_EXPIRY}:{hold_id}"
        fingerprint = hashlib.sha256(key.encode()).digest()
        how = Settling(HoldState.EXPIRED, 0, key, fingerprint, hold.rule_version, now)
        await settle_hold(conn, hold, how)
        expired += 1
    return BatchResult(len(keys), expired)


class Spending:
    def __init__(
        self,
        pool: asyncpg.Pool,
        members: MemberDirectory,
        rules: RulesInForce,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._members = members
        self._rules = rules
        self._clock = clock

    async def hold(self, request: HoldRequest) -> HoldView:
        return await in_transaction(self._pool, lambda conn: self._hold_in(conn, request))

    async def capture(self, request: CaptureRequest) -> HoldView:
        view, replayed = await in_transaction(
            self._pool, lambda conn: self._capture_in(conn, request)
        )
        if not replayed:  # committed: counted once
            metrics.POINTS_REDEEMED.inc(view.captured_points)
        return view

    async def release(self, request: ReleaseRequest) -> HoldView:
        return await in_transaction(self._pool, lambda conn: self._release_in(conn, request))

    async def redeem(self, request: RedeemRequest) -> RedemptionResult:
        result, replayed = await in_transaction(
            self._pool, lambda conn: self._redeem_in(conn, request)
        )
        if not replayed:  # committed: counted once
            metrics.POINTS_REDEEMED.inc(result.points)
        return result

    async def _require_active(self, conn: Conn, member_id: str) -> None:
        member = await self._members.state_of(conn, member_id)
        if member is None:
            raise member_unknown()
        if member.state != ACTIVE:
            raise member_not_active(member.state, "cannot spend points")

    async def _lock(
        self, conn: Conn, member_id: str, key: str, fingerprint: bytes
    ) -> dict[str, Any] | None:
        """Locks the member's balance row; the first result if the key was already used
        (checked again under the lock: a concurrent duplicate may just have committed)."""
        await balance_store.lock_balance(conn, member_id, self._rules.rules.available_floor)
        return await _replay(conn, member_id, key, fingerprint)

    async def _take(self, conn: Conn, member_id: str, points: int, now: datetime) -> list[Taken]:
        """Takes `points` from the usable lots, soonest-expiring first, or raises with
        nothing written. A member in debt (available < 0) has no usable points."""
        if await balance_store.debt_of(conn, member_id) > 0:
            raise insufficient_points("the member owes points and cannot spend")
        lots = await spending_store.lock_spendable_lots(conn, member_id, now)
        taken = plan_take(lots, points)
        if sum(t.points for t in taken) < points:
            raise insufficient_points("more points than the member has available")
        await spending_store.change_lots(
            conn, member_id, [LotPart(t.lot.lot_id, -t.points) for t in taken]
        )
        return taken

    async def _hold_in(self, conn: Conn, request: HoldRequest) -> HoldView:
        key, fingerprint = request.idempotency_key, request.fingerprint()
        done = await _replay(conn, request.member_id, key, fingerprint)
        if done is not None:
            return HoldView.from_json(done)
        await self._require_active(conn, request.member_id)
        done = await self._lock(conn, request.member_id, key, fingerprint)
        if done is not None:
            return HoldView.from_json(done)
        now, version = self._clock(), self._rules.version
        taken = await self._take(conn, request.member_id, request.points, now)
        txn_id = (await ledger_store.next_ids(conn, 1))[0]
        expires_at = now + timedelta(seconds=self._rules.rules.hold_ttl_s)
        row = HoldRow(
            request.member_id,
            request.hold_id,
            HoldState.HELD,
            request.points,
            0,
            expires_at,
            version,
            txn_id,
        )
        moved = [LotPart(t.lot.lot_id, t.points) for t in taken]
        await spending_store.insert_hold(conn, row, now, moved)
        await self._move(conn, request.member_id, txn_id, MEMBER_HELD, moved)
        await spending_store.add_to_balance(
            conn, request.member_id, available=-request.points, held=request.points
        )
        view = HoldView.of(row, HoldState.HELD, 0, txn_id)
        plan = SettlePlan(captured=moved, returned=[], restored=[], expired=[], repaid=0)
        extra = {"reason": request.reason, "reference": request.reference}
        txn = NewTransaction(
            txn_id=txn_id,
            kind=TransactionKind.HOLD,
            idempotency_key=key,
            request_hash=fingerprint,
            rule_version=version,
            points=-request.points,
            result=view.to_json(),
            explanation=explanation(TransactionKind.HOLD, view, plan) | extra,
        )
        await ledger_store.insert_transaction(conn, request.member_id, txn)
        return view

    async def _move(
        self, conn: Conn, member_id: str, txn_id: int, to: Account, moved: LotPoints
    ) -> None:
        version = self._rules.version
        await ledger_store.insert_transfers(
            conn,
            member_id,
            [NewTransfer(txn_id, MEMBER_AVAILABLE, to, p, lot_id, version) for lot_id, p in moved],
        )

    async def _open_hold(self, conn: Conn, member_id: str, hold_id: str, now: datetime) -> HoldRow:
        hold = await spending_store.lock_hold(conn, member_id, hold_id)
        if hold is None:
            raise not_found("hold")
        if hold.state != HoldState.HELD:
            raise hold_not_held(hold.state)
        if hold.expires_at <= now:
            raise failed_precondition(HOLD_EXPIRED, "the hold expired")
        return hold

    async def _capture_in(self, conn: Conn, request: CaptureRequest) -> tuple[HoldView, bool]:
        """The hold, and whether it is an earlier call's answer (a replay)."""
        key, fingerprint = request.idempotency_key, request.fingerprint()
        done = await _replay(conn, request.member_id, key, fingerprint)
        if done is None:
            done = await self._lock(conn, request.member_id, key, fingerprint)
        if done is not None:
            return HoldView.from_json(done), True
        now = self._clock()
        hold = await self._open_hold(conn, request.member_id, request.hold_id, now)
        await self._require_active(conn, request.member_id)
        if request.points > hold.points:
            raise failed_precondition(
                CAPTURE_EXCEEDS_HOLD,
                "the capture is above the points held (a refund may have taken some back)",
            )
        how = Settling(
            HoldState.CAPTURED, request.points, key, fingerprint, self._rules.version, now
        )
        return await settle_hold(conn, hold, how), False

    async def _release_in(self, conn: Conn, request: ReleaseRequest) -> HoldView:
        """Releasing is allowed whatever the member's state (it only gives points back), but
        for a restricted member's ledger."""
        key, fingerprint = request.idempotency_key, request.fingerprint()
        done = await _replay(conn, request.member_id, key, fingerprint)
        if done is None:
            done = await self._lock(conn, request.member_id, key, fingerprint)
        if done is not None:
            return HoldView.from_json(done)
        await refuse_if_restricted(conn, request.member_id)  # its hold_expiry job releases it
        now = self._clock()
        hold = await spending_store.lock_hold(conn, request.member_id, request.hold_id)
        if hold is None:
            raise not_found("hold")
        if hold.state != HoldState.HELD:
            raise hold_not_held(hold.state)
        how = Settling(HoldState.RELEASED, 0, key, fingerprint, self._rules.version, now)
        return await settle_hold(conn, hold, how)

    async def _redeem_in(self, conn: Conn, request: RedeemRequest) -> tuple[RedemptionResult, bool]:
        """The redemption, and whether it is an earlier call's (a replay)."""
        key, fingerprint = request.idempotency_key, request.fingerprint()
        done = await _replay(conn, request.member_id, key, fingerprint)
        if done is not None:
            return RedemptionResult.from_json(done), True
        await self._require_active(conn, request.member_id)
        done = await self._lock(conn, request.member_id, key, fingerprint)
        if done is not None:
            return RedemptionResult.from_json(done), True
        taken = await self._take(conn, request.member_id, request.points, self._clock())
        txn_id = (await ledger_store.next_ids(conn, 1))[0]
        moved = [LotPart(t.lot.lot_id, t.points) for t in taken]
        await self._move(conn, request.member_id, txn_id, REDEEMED, moved)
        await spending_store.add_to_balance(
            conn, request.member_id, available=-request.points, held=0
        )
        result = RedemptionResult.of(request, txn_id, self._rules.version, taken)
        txn = NewTransaction(
            txn_id=txn_id,
            kind=TransactionKind.REDEMPTION,
            idempotency_key=key,
            request_hash=fingerprint,
            rule_version=self._rules.version,
            points=-request.points,
            result=result.to_json(),
            explanation=result.explanation(),
        )
        await ledger_store.insert_transaction(conn, request.member_id, txn)
        return result, False
