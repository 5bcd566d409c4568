"""REST/JSON through the gateway to the real services: routes from the protos, the JSON
mapping, errors as grpc-gateway maps them, API keys, scopes, rate limits, bounded bodies."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2, accounts_pb2_grpc

from gateway.keys import create_key, revoke_key
from gateway.server import GatewaySettings, RunningGateway, start_gateway
from gateway.webhooks import make_signature_header
from tests.support.accounts import next_phone, next_request_id
from tests.support.data_rights import balance_of, member_with_ledger, settle
from tests.support.suite import Suite

SETTINGS = GatewaySettings(
    http_addr="127.0.0.1:0",
    grpc_addr="127.0.0.1:0",
    rate_per_s=1000,
    burst=1000,
    request_timeout_s=5,
    max_body_bytes=64 * 1024,
)


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(suite.settings, SETTINGS)
    yield running
    await running.stop()


async def new_key(suite: Suite, role: str) -> str:
    conn = await asyncpg.connect(suite.dsn)
    try:
        _, key = await create_key(conn, f"test {role}", role, None)
    finally:
        await conn.close()
    return key


async def call(
    gateway: RunningGateway,
    method: str,
    path: str,
    key: str | None,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    url = f"http://127.0.0.1:{gateway.http_port}{path}"
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) else (None if body is None else json.dumps(body))
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=sent) as response,
    ):
        text = await response.read()
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, json.loads(text) if text else {}, headers


async def test_register_and_read_a_member_through_rest(
    suite: Suite, gateway: RunningGateway
) -> None:
    wallet = await new_key(suite, "wallet-backend")
    phone = next_phone()
    status, member, headers = await call(
        gateway,
        "POST",
        "/v1/members",
        wallet,
        {"requestId": next_request_id("rest"), "phone": phone, "displayName": "张三"},
    )
    assert status == 200, member
    assert member["name"].startswith("members/") and member["status"] == "MEMBER_STATUS_ACTIVE"
    assert headers["x-request-id"]
    status, got, _ = await call(gateway, "GET", f"/v1/{member['name']}", wallet)
    assert status == 200 and got["name"] == member["name"]
    assert got["phone"] != phone  # masked by default


async def test_errors_map_to_http_statuses_with_error_info(
    suite: Suite, gateway: RunningGateway
) -> None:
    wallet = await new_key(suite, "wallet-backend")
    status, body, _ = await call(
        gateway, "POST", "/v1/members", wallet, {"requestId": "r-bad", "phone": "12"}
    )
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    kinds = {d["@type"].rsplit(".", 1)[1] for d in body["error"]["details"]}
    assert {"ErrorInfo", "BadRequest"} <= kinds
    status, body, _ = await call(gateway, "GET", "/v1/members/mnosuchmember0000000", wallet)
    assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    status, body, _ = await call(gateway, "POST", "/v1/members", wallet, b"{not json")
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    status, body, _ = await call(
        gateway, "POST", "/v1/members", wallet, {"requestId": "r", "nope": 1}
    )
    assert status == 400
    status, body, _ = await call(gateway, "GET", "/v1/nothing/here", wallet)
    assert status == 404


async def test_keys_and_scopes_are_enforced(suite: Suite, gateway: RunningGateway) -> None:
    settlement = await new_key(suite, "settlement")
    status, body, _ = await call(gateway, "GET", "/v1/members/mx", None)
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    status, _, _ = await call(gateway, "GET", "/v1/members/mx", "wm_bogus_key")
    assert status == 401
    status, body, _ = await call(gateway, "GET", "/v1/members/mx", settlement)
    assert status == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    officer = await new_key(suite, "officer")
    key_id = officer.split("_")[1]
    conn = await asyncpg.connect(suite.dsn)
    try:
        await revoke_key(conn, key_id)
    finally:
        await conn.close()


async def test_rate_limits_answer_429_with_retry_after(suite: Suite) -> None:
    running = await start_gateway(suite.settings, replace(SETTINGS, rate_per_s=0.01, burst=2))
    try:
        wallet = await new_key(suite, "wallet-backend")
        statuses = []
        for _ in range(3):
            status, _, headers = await call(running, "GET", "/v1/members/mx", wallet)
            statuses.append(status)
        assert statuses[:2] == [404, 404] and statuses[2] == 429
        assert int(headers["retry-after"]) >= 1
    finally:
        await running.stop()


async def test_oversized_bodies_are_413(suite: Suite, gateway: RunningGateway) -> None:
    wallet = await new_key(suite, "wallet-backend")
    status, _, _ = await call(
        gateway, "POST", "/v1/members", wallet, b"{" + b" " * (128 * 1024) + b"}"
    )
    assert status == 413


async def test_openapi_document_lists_every_route(gateway: RunningGateway) -> None:
    status, document, _ = await call(gateway, "GET", "/openapi.json", None)
    assert status == 200 and document["openapi"].startswith("3.")
    assert any("/v1/members" in path for path in document["paths"])
    # the webhook routes too, which are not built from the http rules
    for kind in ("payments", "refunds"):
        assert "requestBody" in document["paths"][f"/v1/webhooks/{kind}"]["post"]


SECRET = b"s" * 40


async def webhook(
    gateway: RunningGateway, body: bytes, timestamp: int, signature: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {
        "X-Client-Id": "acme-pay",
        "X-Timestamp": str(timestamp),
        "X-Signature": signature or make_signature_header([SECRET], timestamp, body),
        "Content-Type": "application/json",
    }
    status, payload, _ = await call(gateway, "POST", "/v1/webhooks/payments", None, body, headers)
    return status, payload


async def test_signed_webhooks_settle_once_and_replays_get_the_first_answer(
    suite: Suite,
) -> None:
    running = await start_gateway(
        suite.settings, replace(SETTINGS, webhook_secrets={"acme-pay": (SECRET,)})
    )
    try:
        member_id = await member_with_ledger(suite, payments=0)
        await settle(suite, member_id)  # points knows the member from here on
        body = json.dumps(
            {
                "member": f"members/{member_id}",
                "paymentId": "hook-1",
                "amount": {"currencyCode": "CNY", "amountMinor": "5000"},
                "merchantId": "m-1",
                "merchantCategory": "dining",
                "occurTime": "2026-11-22T08:00:00Z",
            }
        ).encode()
        now = int(time.time())
        status, first = await webhook(running, body, now)
        assert status == 200, first
        again_status, again = await webhook(running, body, now)
        assert (again_status, again) == (status, first)
        before = await balance_of(suite, member_id)
        tampered = body.replace(b"5000", b"9000")
        bad, _ = await webhook(running, tampered, now, make_signature_header([SECRET], now, body))
        assert bad == 401
        stale, _ = await webhook(running, body, now - 3600)
        assert stale == 401
        wrong, _ = await webhook(running, body, now, "v1=" + "0" * 64)
        assert wrong == 401
        assert await balance_of(suite, member_id) == before
    finally:
        await running.stop()


async def test_the_grpc_pass_through_uses_the_same_keys(
    suite: Suite, gateway: RunningGateway
) -> None:
    wallet = await new_key(suite, "wallet-backend")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
    try:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        member = await stub.RegisterMember(
            accounts_pb2.RegisterMemberRequest(
                request_id=next_request_id("pt"), phone=next_phone()
            ),
            metadata=(("authorization", f"Bearer {wallet}"),),
        )
        assert member.name.startswith("members/")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetMember(accounts_pb2.GetMemberRequest(name=member.name))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await channel.close()
