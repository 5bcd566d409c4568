"""The privacy process killed: registration (which encrypts through privacy) fails cleanly
with UNAVAILABLE and quickly, settlement (which never calls privacy) goes on untouched, and
the same registration succeeds once privacy is back."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from membership.accounts.v1 import accounts_pb2 as apb
from membership.accounts.v1 import accounts_pb2_grpc

from tests.chaos.harness import Cluster
from tests.chaos.load import Load, Tokens, channel

pytestmark = pytest.mark.timeout(90)

# accounts' outgoing deadline is 2 s in the cluster: a failure must not take much longer
FAILS_WITHIN_S = 4.0
RECOVERS_WITHIN_S = 20.0
LOAD_S = 5.0


async def _register(
    stub: accounts_pb2_grpc.AccountsServiceStub, tokens: Tokens, request_id: str
) -> apb.Member:
    member: apb.Member = await stub.RegisterMember(
        apb.RegisterMemberRequest(request_id=request_id, phone="13900139123"),
        metadata=tokens.auth("wallet-backend"),
        timeout=10,
    )
    return member


async def _register_once_back(
    stub: accounts_pb2_grpc.AccountsServiceStub, tokens: Tokens, request_id: str
) -> apb.Member:
    deadline = time.monotonic() + RECOVERS_WITHIN_S
    while True:
        try:
            return await _register(stub, tokens, request_id)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert time.monotonic() < deadline, "accounts did not recover after privacy came back"
            await asyncio.sleep(0.2)


async def test_privacy_down_fails_registration_but_not_settlement(cluster: Cluster) -> None:
    tokens = Tokens(cluster.keys_dir)
    load = Load(cluster.addrs["points"], tokens, give_up_s=2.0)
    accounts_channel = channel(cluster.addrs["accounts"])
    accounts = accounts_pb2_grpc.AccountsServiceStub(accounts_channel)
    try:
        await load.add_members(5, "mpriv")
        cluster.kill("privacy")

        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _register(accounts, tokens, "reg-while-down")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
        assert time.monotonic() - started < FAILS_WITHIN_S
        # a clean failure: accounts itself stays up and healthy
        assert cluster.health("accounts") == "SERVING"

        await load.run(LOAD_S, 2, "p")
        assert load.ledger.errors == []
        assert load.ledger.gave_up == 0 and load.ledger.retries == 0
        assert len(load.ledger.settled) > 10

        await asyncio.to_thread(cluster.start, "privacy")
        member = await _register_once_back(accounts, tokens, "reg-while-down")
        assert member.name.startswith("members/")
    finally:
        await accounts_channel.close()
        await load.close()
