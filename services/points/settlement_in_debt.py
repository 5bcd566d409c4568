"""Settling one payment on its own, in a savepoint of the batch's transaction: the path of a
member in debt (allow_negative refunds took `available` below zero), whose new lot's first
points repay the debt. The set-wise batch (settlement.py) is given `SettlementInDebt.settle`
for such members; it decides with the same rules (domain/settlement.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime

from services.points import debt
from services.points.domain import tiers
from services.points.domain.campaign_awards import NO_CAMPAIGNS, CampaignOutcome, with_campaigns
from services.points.domain.debt import Repayment
from services.points.domain.earning import Earning, local_day
from services.points.domain.ledger import (
    ISSUED,
    MEMBER_AVAILABLE,
    MEMBER_PENDING,
    LotState,
    NewLot,
    NewTransfer,
)
from services.points.domain.referrals import DueReferral
from services.points.domain.rules import RulesInForce, Tier
from services.points.domain.settlement import (
    ItemOutcome,
    Locked,
    Payment,
    PointsState,
    Seen,
    SettlementResult,
    earning_of,
    lot_terms,
    nothing_yet,
    replay_or_refuse,
    settlement_of,
    settlement_row,
)
from services.points.domain.tiers import TierState, TierView
from services.points.store import balance as balance_store
from services.points.store import coupons as coupon_store
from services.points.store import ledger as ledger_store
from services.points.store import settlement as settlement_store
from services.points.store import tiers as tier_store
from services.runtime.db import Conn
from services.runtime.errors import DomainError


class SettlementInDebt:
    def __init__(self, rules: RulesInForce, clock: Callable[[], datetime]) -> None:
        self._rules = rules
        self._clock = clock

    async def settle(
        self, conn: Conn, payment: Payment, award: CampaignOutcome = NO_CAMPAIGNS
    ) -> ItemOutcome:
        """One payment on its own, in a savepoint of the caller's transaction: the path of a
        member in debt, whose new lot's first points repay it. `award`: what the running
        campaigns give it (the batch decided, holding their budgets)."""
        try:
            async with conn.transaction():
                result, replayed = await self._settle_in(conn, payment, award)
                return ItemOutcome(result, None, replayed)
        except DomainError as err:
            return ItemOutcome(None, err)

    async def _settle_in(
        self, conn: Conn, payment: Payment, award: CampaignOutcome
    ) -> tuple[SettlementResult, bool]:
        """The result, and whether it is an earlier call's (a replay)."""
        rules, member_id = self._rules.rules, payment.member_id
        locked = await settlement_store.lock_known_member(conn, member_id, rules.available_floor)
        day = local_day(rules, payment.occurred_at)
        now = self._clock()
        window = tiers.window_days(rules, now)
        seen = None
        if locked is not None:
            key = payment.idempotency_key
            seen = await settlement_store.read_under_lock(
                conn, member_id, key=key, day=day, window=window
            )
        prior = None
        if seen is not None and seen.prior is not None:
            prior = seen.prior.settlement(member_id, payment.idempotency_key)
        replay = replay_or_refuse(payment, seen, prior)
        if replay is not None:
            return replay, True
        assert locked is not None and seen is not None  # refused above when unknown
        settled = await self._settle_locked(conn, payment, locked, seen, award, day=day, now=now)
        await coupon_store.redeem_for_payment(conn, payment.member_id, payment.payment_id)
        return settled, False

    async def _settle_locked(
        self,
        conn: Conn,
        payment: Payment,
        locked: Locked,
        seen: Seen,
        award: CampaignOutcome,
        *,
        day: date,
        now: datetime,
    ) -> SettlementResult:
        in_force = self._rules
        tier = tiers.tier_of(in_force.rules, seen.tier)
        program = earning_of(in_force, payment, tier, seen.earned_today)
        earned = with_campaigns(program, award)
        counted = (program.points, program.points + award.qualifying_points)
        before = TierView(seen.tier, seen.qualifying)
        upgrade = tiers.qualified(in_force, now, before, counted[1], day).upgrade
        # a referred member: its first settlement makes the referral bonus due
        referral = None
        if seen.referred_by:
            referral = DueReferral(
                payment.member_id, seen.referred_by, payment.payment_id, in_force.version
            )
        ids = locked.ids
        if earned.points > 0 and locked.available < 0:
            return await self._record_repaying_debt(
                conn,
                payment,
                earned,
                now,
                txn_id=ids.txn_id,
                day=day,
                tier=tier,
                upgrade=upgrade,
                referral=referral,
                counted=counted,
                campaigns=award,
            )
        settled = settlement_of(
            in_force,
            now,
            payment,
            earned,
            txn_id=ids.txn_id,
            lot_id=ids.lot_id,
            transfer_id=ids.transfer_id,
            day=day,
            tier=tier,
            campaigns=award,
        )
        await settlement_store.write_settlement(
            conn,
            payment.member_id,
            settled.row,
            settled.credit,
            upgrade=upgrade,
            referral=referral,
            counted=counted,
        )
        return settled.result

    async def _record_repaying_debt(
        self,
        conn: Conn,
        payment: Payment,
        earned: Earning,
        now: datetime,
        *,
        txn_id: int,
        day: date,
        tier: Tier,
        upgrade: TierState | None,
        referral: DueReferral | None,
        counted: tuple[int, int],
        campaigns: CampaignOutcome,
    ) -> SettlementResult:
        """A member in debt (allow_negative): the new lot's first points repay it. `day`:
        the payment's; `tier`: the one it earned at; `counted`: the points the daily cap
        counts and the tier-qualifying ones."""
        member_id, points = payment.member_id, earned.points
        (lot_id,) = await ledger_store.next_ids(conn, 1)
        result = nothing_yet(self._rules, payment, points, txn_id, tier)
        owed = await balance_store.debt_of(conn, member_id)  # before the credit raises `available`
        result = await self._credit(conn, payment, result, lot_id, now)
        repaid = min(points, owed)
        pending = result.state is PointsState.PENDING
        repayment = Repayment(txn_id=txn_id, lot_id=lot_id, points=repaid, pending=pending)
        await debt.repay_from_new_lot(conn, member_id, repayment, self._rules.version)
        await ledger_store.add_earned_on(conn, member_id, day, counted[0])
        await tier_store.add_qualifying(conn, member_id, day, counted[1])
        if upgrade is not None:
            await tier_store.set_tier(conn, member_id, upgrade)
        row = settlement_row(self._rules, payment, earned, result, repaid, campaigns)
        await settlement_store.write_settlement(conn, member_id, row, None, referral=referral)
        return result

    async def _credit(
        self, conn: Conn, payment: Payment, result: SettlementResult, lot_id: int, now: datetime
    ) -> SettlementResult:
        """A new lot of the result's points, pending for the return window unless that
        already passed."""
        version, member_id, points = self._rules.version, payment.member_id, result.points
        terms = lot_terms(self._rules, now, payment)
        txn_id = result.txn_id or 0
        state = LotState.PENDING if terms.pending else LotState.AVAILABLE
        lot = NewLot(
            lot_id,
            txn_id,
            state,
            points,
            payment.occurred_at,
            terms.available_at,
            terms.expires_at,
            version,
        )
        await ledger_store.insert_lot(conn, member_id, lot)
        to_account = MEMBER_PENDING if terms.pending else MEMBER_AVAILABLE
        transfer = NewTransfer(txn_id, ISSUED, to_account, points, lot_id, version)
        await ledger_store.insert_transfers(conn, member_id, [transfer])
        await balance_store.add_to_balance(
            conn,
            member_id,
            pending=points if terms.pending else 0,
            available=0 if terms.pending else points,
            earned=points,
        )
        return replace(
            result,
            state=terms.state,
            available_at=terms.available_at,
            expires_at=terms.expires_at,
            rule_version=version,
        )
