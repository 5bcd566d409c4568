"""One rate-limit bucket per API key, shared by the REST door and the gRPC pass-through: a
key cannot get twice its rate by alternating, and the gRPC door answers RESOURCE_EXHAUSTED
RATE_LIMITED with a RetryInfo where REST answers 429 with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from membership.accounts.v1 import accounts_pb2, accounts_pb2_grpc

from gateway.server import RunningGateway, start_gateway
from tests.service.test_gateway_rest import SETTINGS, call, new_key
from tests.support.rpc_errors import STATUS_DETAILS_KEY
from tests.support.suite import Suite

BURST = 4
MISSING = "members/mnosuchmember0000000"


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[RunningGateway]:
    # refills once in 100 s: nothing comes back during the test
    running = await start_gateway(suite.settings, replace(SETTINGS, rate_per_s=0.01, burst=BURST))
    yield running
    await running.stop()


async def rest_get(gateway: RunningGateway, key: str) -> tuple[int, dict[str, str]]:
    status, _, headers = await call(gateway, "GET", f"/v1/{MISSING}", key)
    return status, headers


async def grpc_get(channel: grpc.aio.Channel, key: str) -> grpc.aio.AioRpcError:
    """GetMember of a member that does not exist: it always fails, NOT_FOUND or limited."""
    stub = accounts_pb2_grpc.AccountsServiceStub(channel)
    try:
        await stub.GetMember(
            accounts_pb2.GetMemberRequest(name=MISSING),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=10,
        )
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the member should not exist")


def limit_details(err: grpc.aio.AioRpcError) -> tuple[error_details_pb2.ErrorInfo, float]:
    """The ErrorInfo and the RetryInfo delay (seconds) of a refusal."""
    [raw] = [v for k, v in err.trailing_metadata() or () if k == STATUS_DETAILS_KEY]
    assert isinstance(raw, bytes)
    status = status_pb2.Status.FromString(raw)
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    first, second = status.details
    assert first.Unpack(info) and second.Unpack(retry)
    return info, retry.retry_delay.ToTimedelta().total_seconds()


async def test_one_key_alternating_rest_and_grpc_shares_one_bucket(
    suite: Suite, gateway: RunningGateway
) -> None:
    wallet = await new_key(suite, "wallet-backend")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    try:
        for _ in range(BURST // 2):
            status, _ = await rest_get(gateway, wallet)
            assert status == 404
            assert (await grpc_get(channel, wallet)).code() == grpc.StatusCode.NOT_FOUND
        # the burst is spent, half through each door: both doors refuse now
        status, headers = await rest_get(gateway, wallet)
        assert status == 429 and int(headers["retry-after"]) >= 1
        limited = await grpc_get(channel, wallet)
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, delay_s = limit_details(limited)
        assert (info.reason, info.domain) == ("RATE_LIMITED", "gateway.membership")
        assert delay_s > 0
        # another key has a bucket of its own
        other = await new_key(suite, "wallet-backend")
        assert (await grpc_get(channel, other)).code() == grpc.StatusCode.NOT_FOUND
    finally:
        await channel.close()


async def test_grpc_calls_alone_spend_the_bucket_rest_uses(
    suite: Suite, gateway: RunningGateway
) -> None:
    wallet = await new_key(suite, "wallet-backend")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    try:
        codes = [(await grpc_get(channel, wallet)).code() for _ in range(BURST + 1)]
    finally:
        await channel.close()
    assert codes == [grpc.StatusCode.NOT_FOUND] * BURST + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    status, headers = await rest_get(gateway, wallet)
    assert status == 429 and "retry-after" in headers
