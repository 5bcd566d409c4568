"""A stand-in points service for gateway tests: SettlePayment and RefundPayment answer what
the test queues (a status with ErrorInfo and optional RetryInfo, a hang, or success), so the
gateway's handling of statuses the real points cannot produce on demand can be pinned.

    async with fake_points() as fake:
        fake.default = Outcome(grpc.StatusCode.UNAVAILABLE, "MEMBER_UNKNOWN", 2.5)
        settings = settings_for(dsn, keys_dir, points_addr=fake.addr)

The gateway's channels retry UNAVAILABLE by themselves (services/runtime/clients.py, up to
3 attempts), so a lasting condition belongs in `default`, not in one queued answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from membership.points.v1 import points_pb2

POINTS = "membership.points.v1.PointsService"
HANG_S = 30.0


@dataclass(frozen=True)
class Outcome:
    """One answer: OK (a Settlement / Refund), a failure, or `hang` (never answers)."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    reason: str = ""
    retry_delay_s: float | None = None
    hang: bool = False


def status_of(outcome: Outcome) -> grpc.Status:
    """The google.rpc.Status points would send: ErrorInfo, and RetryInfo when given."""
    details = [any_pb2.Any()]
    details[0].Pack(error_details_pb2.ErrorInfo(reason=outcome.reason, domain="points.membership"))
    if outcome.retry_delay_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(outcome.retry_delay_s * 1e9))
        details.append(any_pb2.Any())
        details[1].Pack(retry)
    code_number = outcome.code.value[0]
    status = status_pb2.Status(code=code_number, message="fake points says no", details=details)
    return rpc_status.to_status(status)


@dataclass
class FakePoints:
    addr: str = ""
    # answered in order; when empty, every call gets `default`
    answers: deque[Outcome] = field(default_factory=deque)
    default: Outcome = field(default_factory=Outcome)
    calls: int = 0

    async def _answer(self, context: grpc.aio.ServicerContext) -> None:
        self.calls += 1
        outcome = self.answers.popleft() if self.answers else self.default
        if outcome.hang:
            await asyncio.sleep(HANG_S)
        if outcome.code != grpc.StatusCode.OK:
            status = status_of(outcome)
            await context.abort(status.code, status.details, status.trailing_metadata)

    async def settle(
        self, request: points_pb2.SettlePaymentRequest, context: grpc.aio.ServicerContext
    ) -> points_pb2.Settlement:
        await self._answer(context)
        name = f"{request.member}/settlements/{request.payment_id}"
        return points_pb2.Settlement(name=name, points=5)

    async def refund(
        self, request: points_pb2.RefundPaymentRequest, context: grpc.aio.ServicerContext
    ) -> points_pb2.Refund:
        await self._answer(context)
        return points_pb2.Refund(name=f"{request.member}/refunds/{request.refund_id}")

    def handlers(self) -> grpc.GenericRpcHandler:
        methods = {
            "SettlePayment": grpc.unary_unary_rpc_method_handler(
                self.settle,
                request_deserializer=points_pb2.SettlePaymentRequest.FromString,
                response_serializer=points_pb2.Settlement.SerializeToString,
            ),
            "RefundPayment": grpc.unary_unary_rpc_method_handler(
                self.refund,
                request_deserializer=points_pb2.RefundPaymentRequest.FromString,
                response_serializer=points_pb2.Refund.SerializeToString,
            ),
        }
        return grpc.method_handlers_generic_handler(POINTS, methods)


@contextlib.asynccontextmanager
async def fake_points() -> AsyncIterator[FakePoints]:
    fake = FakePoints()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((fake.handlers(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fake.addr = f"127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await server.stop(0)
