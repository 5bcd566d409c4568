"""gRPC <-> domain: SettlePayment, SettlePayments, GetBalance."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2
from membership.points.v1 import points_pb2 as pb

from services.points.ledger import ItemOutcome
from services.points.server_base import RpcGroup, timestamp
from services.points.settlement import Payment, PointsState, SettlementResult
from services.points.unknown_members import is_member_unknown
from services.points.validation import batch_size, payment_of, payment_or_error
from services.runtime.errors import DomainError, ViolationCollector
from services.runtime.names import member_id_of, member_name
from services.runtime.status import rpc_code_number

STATE_TO_PB = {
    PointsState.PENDING: pb.POINTS_STATE_PENDING,
    PointsState.AVAILABLE: pb.POINTS_STATE_AVAILABLE,
    PointsState.NONE: pb.POINTS_STATE_NONE,
}


def settlement_pb(result: SettlementResult) -> pb.Settlement:
    member = member_name(result.member_id)
    return pb.Settlement(
        name=f"{member}/settlements/{result.payment_id}",
        points=result.points,
        state=STATE_TO_PB[result.state],
        available_time=timestamp(result.available_at),
        expire_time=timestamp(result.expires_at),
        tier_multiplier_bps=result.tier_multiplier_bps,
        rule_version=result.rule_version,
        transaction=(
            f"{member}/transactions/{result.txn_id}"
            if result.points > 0 and result.txn_id is not None
            else ""
        ),
    )


def outcome_pb(outcome: ItemOutcome | DomainError) -> pb.SettlePaymentResult:
    if isinstance(outcome, ItemOutcome) and outcome.result is not None:
        return pb.SettlePaymentResult(settlement=settlement_pb(outcome.result))
    error = outcome if isinstance(outcome, DomainError) else outcome.error
    if error is None:
        raise DomainError.internal("a batch item has neither a result nor an error")
    retry_delay = None
    if error.retry_after_s is not None:
        retry_delay = duration_pb2.Duration()
        retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
    return pb.SettlePaymentResult(
        error_code=rpc_code_number(error),
        error_reason=error.reason,
        error_message=error.message,
        retry_delay=retry_delay,
    )


class SettlementRpcs(RpcGroup):
    async def SettlePayment(
        self, request: pb.SettlePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Settlement:
        delay_days = self.deps.ledger.rules.rules.settlement_delay_limit_days
        payment = payment_of(request, self.deps.clock(), delay_days)
        settled = self.deps.ledger.settle(payment)
        return settlement_pb(await self.for_known_member(payment.member_id, settled))

    async def SettlePayments(
        self, request: pb.SettlePaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlePaymentsResponse:
        v = ViolationCollector()
        batch_size(v, len(request.requests))
        v.raise_if_any()
        now = self.deps.clock()
        delay_days = self.deps.ledger.rules.rules.settlement_delay_limit_days
        parsed = [payment_or_error(r, now, delay_days) for r in request.requests]
        valid = [p for p in parsed if not isinstance(p, DomainError)]
        outcomes = await self.deps.ledger.settle_many(valid) if valid else []
        settled = iter(await self._refine_unknown(valid, outcomes))
        results = [p if isinstance(p, DomainError) else next(settled) for p in parsed]
        return pb.SettlePaymentsResponse(results=[outcome_pb(r) for r in results])

    async def _refine_unknown(
        self, payments: Sequence[Payment], outcomes: Sequence[ItemOutcome]
    ) -> list[ItemOutcome]:
        """Items refused for a member points does not know get unknown_members' answer."""
        unknown = [
            p.member_id
            for p, o in zip(payments, outcomes, strict=True)
            if is_member_unknown(o.error)
        ]
        if not unknown:
            return list(outcomes)
        refusals = await self.deps.members.refusals(unknown, self.deps.clock())
        return [
            ItemOutcome(None, refusals[p.member_id]) if is_member_unknown(o.error) else o
            for p, o in zip(payments, outcomes, strict=True)
        ]

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Balance:
        v = ViolationCollector()
        member_id = member_id_of(v, request.name, "name", "/balance")
        v.raise_if_any()
        row, expiring = await self.deps.ledger.balance(member_id)
        return pb.Balance(
            name=request.name,
            available=row.available,
            pending=row.pending,
            held=row.held,
            lifetime_earned=row.lifetime_earned,
            expiring=[pb.ExpiringPoints(points=n, expire_time=timestamp(at)) for n, at in expiring],
        )
