"""gRPC <-> domain: RefundPayment."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_refunds import refund_of, refund_pb
from services.points.server_base import RpcGroup


class RefundRpcs(RpcGroup):
    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Refund:
        refund = refund_of(request)
        refunded = self.deps.refunds.refund(refund)
        return refund_pb(await self.for_known_member(refund.member_id, refunded))
