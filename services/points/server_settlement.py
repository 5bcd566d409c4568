"""gRPC <-> domain: SettlePayment, SettlePayments."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_settlement import payment_of, payments_of, results_pb, settlement_pb
from services.points.server_base import RpcGroup
from services.runtime.errors import DomainError


class SettlementRpcs(RpcGroup):
    async def SettlePayment(
        self, request: pb.SettlePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Settlement:
        delay_days = self.deps.rules.rules.settlement_delay_limit_days
        payment = payment_of(request, self.deps.clock(), delay_days)
        settled = self.deps.settlement.settle(payment)
        return settlement_pb(await self.for_known_member(payment.member_id, settled))

    async def SettlePayments(
        self, request: pb.SettlePaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlePaymentsResponse:
        delay_days = self.deps.rules.rules.settlement_delay_limit_days
        parsed = payments_of(request, self.deps.clock(), delay_days)
        valid = [p for p in parsed if not isinstance(p, DomainError)]
        outcomes = await self.deps.settlement.settle_batch(valid) if valid else []
        return results_pb(parsed, outcomes)
