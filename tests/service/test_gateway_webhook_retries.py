"""Which webhook answers the gateway keeps for replays: only those a retry cannot change
(success, INVALID_ARGUMENT, ALREADY_EXISTS). A delivery refused for a passing or
state-dependent reason is not kept, so its identical retry reaches points again and gets the
new answer."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from gateway.errors import gateway_error
from gateway.server import MIGRATIONS, RunningGateway, start_gateway
from gateway.store import insert_delivery
from gateway.webhooks import make_signature_header
from services.runtime.db import load_migrations, migrate
from tests.service.test_gateway_rest import SETTINGS, call
from tests.service.test_points_settlement import announce
from tests.support.fake_points import FakePoints, Outcome, fake_points
from tests.support.suite import Suite, settings_for

SECRET = b"w" * 40
CLIENT = "acme-pay"
HOOKS = replace(SETTINGS, webhook_secrets={CLIENT: (SECRET,)}, request_timeout_s=0.5)


def settlement_body(member_id: str, payment_id: str) -> bytes:
    return json.dumps(
        {
            "member": f"members/{member_id}",
            "paymentId": payment_id,
            "amount": {"currencyCode": "CNY", "amountMinor": "5000"},
            "merchantId": "m-1",
            "merchantCategory": "dining",
            "occurTime": "2026-11-22T08:00:00Z",
        }
    ).encode()


def refund_body(member_id: str, refund_id: str) -> bytes:
    return json.dumps(
        {
            "member": f"members/{member_id}",
            "paymentId": "pay-1",
            "refundId": refund_id,
            "amount": {"currencyCode": "CNY", "amountMinor": "100"},
        }
    ).encode()


@dataclass(frozen=True)
class Delivery:
    """One signed delivery; sending it again is the sender's identical retry."""

    kind: str
    body: bytes
    timestamp: int

    @property
    def signature(self) -> str:
        return make_signature_header([SECRET], self.timestamp, self.body)

    async def send(self, gateway: RunningGateway) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers = {
            "X-Client-Id": CLIENT,
            "X-Timestamp": str(self.timestamp),
            "X-Signature": self.signature,
            "Content-Type": "application/json",
        }
        path = f"/v1/webhooks/{self.kind}"
        return await call(gateway, "POST", path, None, self.body, headers)


async def kept_answers(dsn: str, delivery: Delivery) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT response_status FROM gateway.webhook_deliveries"
            " WHERE client_id = $1 AND signature = $2",
            CLIENT,
            delivery.signature,
        )
    finally:
        await conn.close()
    return [r["response_status"] for r in rows]


async def test_a_settlement_for_a_member_points_learns_later_gets_the_new_answer(
    suite: Suite,
) -> None:
    member_id = "mhookretry0000000001"
    delivery = Delivery("payments", settlement_body(member_id, "hook-retry-1"), int(time.time()))
    running = await start_gateway(suite.settings, HOOKS)
    try:
        refused, first, _ = await delivery.send(running)
        # UNAVAILABLE (503) once points answers so; FAILED_PRECONDITION (400) before that
        assert refused in (400, 503), first
        assert first["error"]["details"][0]["reason"] == "MEMBER_UNKNOWN"
        assert await kept_answers(suite.dsn, delivery) == []
        await announce(suite, member_id)
        status, settled, _ = await delivery.send(running)
        assert status == 200, settled
        assert settled["name"] == f"members/{member_id}/settlements/hook-retry-1"
        # a success is final: kept, and a replay gets it again
        assert await kept_answers(suite.dsn, delivery) == [200]
        again, replayed, _ = await delivery.send(running)
        assert (again, replayed) == (200, settled)
    finally:
        await running.stop()


@dataclass
class Hooked:
    points: FakePoints
    gateway: RunningGateway
    dsn: str


@pytest.fixture
async def hooked(database: str, keys_dir: Path) -> AsyncIterator[Hooked]:
    async with fake_points() as points:
        running = await start_gateway(
            settings_for(database, keys_dir, points_addr=points.addr), HOOKS
        )
        try:
            yield Hooked(points, running, database)
        finally:
            await running.stop()


RETRYABLE = [
    (Outcome(grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_UNKNOWN"), 400),
    (Outcome(grpc.StatusCode.UNAVAILABLE, "MEMBER_UNKNOWN", 1.0), 503),
    (Outcome(grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY", 2.0), 429),
    (Outcome(grpc.StatusCode.ABORTED, "CONTENDED"), 409),
    (Outcome(grpc.StatusCode.NOT_FOUND, "NOT_FOUND"), 404),
    (Outcome(grpc.StatusCode.INTERNAL, "INTERNAL"), 500),
    (Outcome(hang=True), 504),
]


@pytest.mark.parametrize("kind", ["payments", "refunds"])
@pytest.mark.parametrize(("outcome", "http"), RETRYABLE)
async def test_a_retryable_answer_is_not_kept(
    hooked: Hooked, kind: str, outcome: Outcome, http: int
) -> None:
    made = settlement_body if kind == "payments" else refund_body
    delivery = Delivery(kind, made("mfake0001", "id-1"), int(time.time()))
    hooked.points.default = outcome
    status, refused, headers = await delivery.send(hooked.gateway)
    assert status == http and refused["error"]["code"] == http, refused
    if outcome.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
        assert int(headers["retry-after"]) >= 1
    assert await kept_answers(hooked.dsn, delivery) == []
    hooked.points.default = Outcome()  # the condition has cleared
    calls = hooked.points.calls
    status, answered, _ = await delivery.send(hooked.gateway)
    assert status == 200, answered
    assert hooked.points.calls == calls + 1
    assert await kept_answers(hooked.dsn, delivery) == [200]


@pytest.mark.parametrize(
    ("outcome", "http"),
    [
        (Outcome(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), 400),
        (Outcome(grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_KEY_REUSED"), 409),
    ],
)
async def test_a_final_refusal_is_kept_and_replayed_without_reaching_points(
    hooked: Hooked, outcome: Outcome, http: int
) -> None:
    delivery = Delivery("payments", settlement_body("mfake0001", "pay-final"), int(time.time()))
    hooked.points.default = outcome
    status, refused, _ = await delivery.send(hooked.gateway)
    assert status == http, refused
    assert await kept_answers(hooked.dsn, delivery) == [http]
    hooked.points.default = Outcome()
    calls = hooked.points.calls
    again, replayed, _ = await delivery.send(hooked.gateway)
    assert (again, replayed) == (status, refused)
    assert hooked.points.calls == calls


async def test_webhook_refusals_by_the_gateway(hooked: Hooked) -> None:
    delivery = Delivery("payments", settlement_body("mfake0001", "pay-x"), int(time.time()))
    headers = {"X-Client-Id": CLIENT, "X-Timestamp": str(delivery.timestamp)}
    path = "/v1/webhooks/payments"
    status, body, answer = await call(hooked.gateway, "POST", path, None, delivery.body, headers)
    assert status == 401 and body["error"]["code"] == 401
    assert answer["www-authenticate"].startswith("Signature")
    big = b"{" + b" " * (70 * 1024) + b"}"
    status, body, _ = await call(hooked.gateway, "POST", path, None, big, headers)
    assert status == 413 and body["error"]["code"] == 413
    # a body that is not the request: invalid whatever points knows, kept
    bad = Delivery("payments", b'{"nope": 1}', int(time.time()))
    status, body, _ = await bad.send(hooked.gateway)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert await kept_answers(hooked.dsn, bad) == [400]
    assert hooked.points.calls == 0


async def test_refusals_kept_before_are_dropped_by_the_migration(database: str) -> None:
    """A gateway upgraded from one that kept every 400/404/409 answer forgets the
    state-dependent ones, so their senders' retries reach points again."""
    conn = await asyncpg.connect(database)
    try:
        migrations = load_migrations(MIGRATIONS)
        await migrate(conn, "gateway", migrations[:2])  # before the final-answers rule
        kept = {
            "ok": (200, b'{"name":"members/m1/settlements/p1"}'),
            "unknown": (400, error_body(400, "FAILED_PRECONDITION")),
            "invalid": (400, error_body(400, "INVALID_ARGUMENT")),
            "reused": (409, error_body(409, "ALREADY_EXISTS")),
            "aborted": (409, error_body(409, "ABORTED")),
            "no-payment": (404, error_body(404, "NOT_FOUND")),
        }
        for signature, (status, body) in kept.items():
            await insert_delivery(conn, CLIENT, signature, "payments", status, body)
        await migrate(conn, "gateway", migrations)
        rows = await conn.fetch("SELECT signature FROM gateway.webhook_deliveries")
    finally:
        await conn.close()
    assert {r["signature"] for r in rows} == {"ok", "invalid", "reused"}


def error_body(status: int, code: str) -> bytes:
    grpc_code = grpc.StatusCode[code]
    return gateway_error(grpc_code, "SOME_REASON", "text", status=status).body
