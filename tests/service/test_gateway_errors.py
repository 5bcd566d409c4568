"""The REST gateway's error answers: the body's `code` is the HTTP status of the response,
401s carry an RFC 6750 `WWW-Authenticate` challenge, and a backend status that says when to
retry (google.rpc.RetryInfo) becomes `Retry-After`.

Most run against a stand-in points service (tests/support/fake_points.py) that answers the
statuses the test chooses; the last one uses the real points service."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from gateway.keys import create_key
from gateway.server import RunningGateway, start_gateway
from tests.service.test_gateway_rest import SETTINGS, call
from tests.support.fake_points import FakePoints, Outcome, fake_points
from tests.support.suite import Suite, settings_for

TIMEOUT_S = 0.5
BURST = 3
SETTLE_BODY = {
    "paymentId": "pay-1",
    "amount": {"currencyCode": "CNY", "amountMinor": "5000"},
    "merchantId": "m-1",
    "merchantCategory": "dining",
    "occurTime": "2026-11-22T08:00:00Z",
}


@dataclass
class Faked:
    points: FakePoints
    gateway: RunningGateway
    dsn: str

    async def key(self, role: str) -> str:
        """A new key, so each check starts with a full bucket of its own."""
        conn = await asyncpg.connect(self.dsn)
        try:
            _, made = await create_key(conn, f"test {role}", role, None)
        finally:
            await conn.close()
        return made

    async def settle(
        self, member_id: str = "mfake0001"
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        path = f"/v1/members/{member_id}/payments:settle"
        return await call(self.gateway, "POST", path, await self.key("settlement"), SETTLE_BODY)


@pytest.fixture
async def faked(database: str, keys_dir: Path) -> AsyncIterator[Faked]:
    """The gateway in front of the stand-in points; accounts and privacy are unreachable."""
    async with fake_points() as points:
        settings = settings_for(database, keys_dir, points_addr=points.addr)
        limits = replace(SETTINGS, rate_per_s=0.01, burst=BURST, request_timeout_s=TIMEOUT_S)
        running = await start_gateway(settings, limits)
        try:
            yield Faked(points, running, database)
        finally:
            await running.stop()


def assert_code_is_status(status: int, body: dict[str, Any], expected: int) -> None:
    assert status == expected, body
    assert body["error"]["code"] == status, body


async def test_401_challenges_name_bearer_and_an_invalid_token(faked: Faked) -> None:
    gw = faked.gateway
    status, body, headers = await call(gw, "GET", "/v1/members/mx", None)
    assert_code_is_status(status, body, 401)
    assert headers["www-authenticate"] == "Bearer"
    status, body, headers = await call(
        gw, "GET", "/v1/members/mx", None, None, {"Authorization": "Basic eDp5"}
    )
    assert_code_is_status(status, body, 401)
    assert headers["www-authenticate"] == "Bearer"
    status, body, headers = await call(gw, "GET", "/v1/members/mx", "wm_bogus_key")
    assert_code_is_status(status, body, 401)
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_every_gateway_error_body_code_is_the_http_status(faked: Faked) -> None:
    gw = faked.gateway
    status, body, headers = await call(gw, "GET", "/v1/members/mx", await faked.key("settlement"))
    assert_code_is_status(status, body, 403)
    assert body["error"]["status"] == "PERMISSION_DENIED"
    assert headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
    status, body, _ = await call(gw, "GET", "/v1/nothing/here", await faked.key("wallet-backend"))
    assert_code_is_status(status, body, 404)
    status, body, headers = await call(gw, "DELETE", "/v1/members", await faked.key("admin"))
    assert_code_is_status(status, body, 405)
    assert body["error"]["status"] == "UNIMPLEMENTED" and headers["allow"] == "GET, POST"
    wallet = await faked.key("wallet-backend")
    status, body, _ = await call(
        gw, "POST", "/v1/members", wallet, b"{" + b" " * (128 * 1024) + b"}"
    )
    assert_code_is_status(status, body, 413)
    assert body["error"]["status"] == "INVALID_ARGUMENT"
    status, body, _ = await call(gw, "POST", "/v1/members", wallet, b"{not json")
    assert_code_is_status(status, body, 400)


async def test_rate_limited_body_code_is_429(faked: Faked) -> None:
    wallet = await faked.key("wallet-backend")
    for _ in range(BURST):
        await call(faked.gateway, "GET", "/v1/members/mx", wallet)
    status, body, headers = await call(faked.gateway, "GET", "/v1/members/mx", wallet)
    assert_code_is_status(status, body, 429)
    assert body["error"]["details"][0]["reason"] == "RATE_LIMITED"
    assert int(headers["retry-after"]) >= 1


async def test_deadline_and_unreachable_backends_body_codes(faked: Faked) -> None:
    faked.points.answers.append(Outcome(hang=True))
    status, body, headers = await faked.settle()
    assert_code_is_status(status, body, 504)
    assert body["error"]["status"] == "DEADLINE_EXCEEDED" and "retry-after" not in headers
    # accounts is not running: gRPC itself answers UNAVAILABLE, without details
    wallet = await faked.key("wallet-backend")
    status, body, headers = await call(faked.gateway, "GET", "/v1/members/mx", wallet)
    assert_code_is_status(status, body, 503)
    assert headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("outcome", "http", "retry_after"),
    [
        (Outcome(grpc.StatusCode.UNAVAILABLE, "MEMBER_UNKNOWN", 2.2), 503, "3"),
        (Outcome(grpc.StatusCode.UNAVAILABLE, "MEMBER_UNKNOWN", 0.0), 503, "1"),
        (Outcome(grpc.StatusCode.UNAVAILABLE, "OVERLOADED"), 503, "1"),
        (Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY", 0.2), 429, "1"),
        (Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY", 7.0), 429, "7"),
        (Outcome(grpc.StatusCode.ABORTED, "CONTENDED", 1.5), 409, "2"),
        (Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA"), 429, None),
        (Outcome(grpc.StatusCode.FAILED_PRECONDITION, "FROZEN"), 400, None),
    ],
)
async def test_backend_retry_info_becomes_retry_after(
    faked: Faked, outcome: Outcome, http: int, retry_after: str | None
) -> None:
    faked.points.default = outcome
    status, body, headers = await faked.settle()
    assert_code_is_status(status, body, http)
    assert headers.get("retry-after") == retry_after
    assert body["error"]["details"][0]["reason"] == outcome.reason
    retry = [d for d in body["error"]["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    if outcome.retry_delay_s is None:
        assert retry == []
    else:
        [info] = retry
        assert math.isclose(float(info.get("retryDelay", "0s").rstrip("s")), outcome.retry_delay_s)


async def test_an_unknown_member_at_points_is_503_with_retry_after(suite: Suite) -> None:
    """Depends on points answering UNAVAILABLE MEMBER_UNKNOWN with a RetryInfo."""
    running = await start_gateway(suite.settings, SETTINGS)
    try:
        conn = await asyncpg.connect(suite.dsn)
        try:
            _, settlement = await create_key(conn, "test settlement", "settlement", None)
        finally:
            await conn.close()
        path = "/v1/members/mnobodyknows00000001/payments:settle"
        status, body, headers = await call(running, "POST", path, settlement, SETTLE_BODY)
    finally:
        await running.stop()
    assert_code_is_status(status, body, 503)
    assert body["error"]["status"] == "UNAVAILABLE", json.dumps(body)
    assert body["error"]["details"][0]["reason"] == "MEMBER_UNKNOWN"
    assert any(d["@type"].endswith("google.rpc.RetryInfo") for d in body["error"]["details"])
    assert int(headers["retry-after"]) >= 1
