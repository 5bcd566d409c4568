"""The authorisation matrix through the real REST gateway: every route of the route table ×
every role, and no key, a malformed key, an unknown key, a revoked key and an expired key,
gives exactly the outcome the access table (docs/gateway-routes.md) allows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.errors import DOMAIN
from gateway.http_rules import Route
from gateway.keys import create_key, revoke_key
from gateway.route_doc import EXTERNAL_ROLES, roles_of
from gateway.server import RunningGateway, route_table, start_gateway
from tests.service.test_gateway_rest import SETTINGS
from tests.support.suite import Suite

# a syntactically valid id for the `*` after each collection, so that a call that gets
# through authorisation reaches the service (which may still answer 400/404)
PLACEHOLDERS = {
    "members": "mauthz",
    "dataRequests": "draaaaaaaaaaaaaaaaaaaa",
    "holds": "hauthz",
    "transactions": "tauthz",
    "payments": "pay-authz",
    "rewards": "sku-authz",
    "consents": "marketing",
    "subjectKeys": "subject-authz",
}
CHUNK = 20


def concrete_path(route: Route) -> str:
    """The route's template with every variable filled: each `*` by the placeholder id of
    the collection before it, a `**` by two such segments."""
    parts: list[str] = []
    for segment in route.path.segments:
        previous = parts[-1] if parts else ""
        if segment.kind == "literal":
            parts.append(segment.text)
        elif segment.kind == "*":
            parts.append(PLACEHOLDERS.get(previous, "authz"))
        else:
            parts += ["authz", "authz"]
    path = "/" + "/".join(parts)
    return f"{path}:{route.path.verb}" if route.path.verb else path


def test_every_concrete_path_matches_its_own_route() -> None:
    table = route_table()
    for route in table.routes:
        found = table.match(route.http_method, concrete_path(route))
        assert found is not None and found.route == route, (route.template, concrete_path(route))


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Case:
    route: Route
    caller: str  # a role, or what is wrong with the key
    authorization: str | None

    def describe(self) -> str:
        return f"{self.caller} {self.route.http_method} {self.route.template}"


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[RunningGateway]:
    running = await start_gateway(suite.settings, SETTINGS)
    yield running
    await running.stop()


async def keys(suite: Suite) -> dict[str, str]:
    """An Authorization header per caller: one per role, and the ones that must not pass."""
    conn = await asyncpg.connect(suite.dsn)
    try:
        made = {}
        for role in EXTERNAL_ROLES:
            _, key = await create_key(conn, f"authz {role}", role, None)
            made[role] = f"Bearer {key}"
        _, revoked = await create_key(conn, "authz revoked", "admin", None)
        await revoke_key(conn, revoked.split("_")[1])
        long_ago = datetime.now(UTC) - timedelta(days=2)
        _, expired = await create_key(
            conn, "authz expired", "admin", timedelta(days=1), now=long_ago
        )
    finally:
        await conn.close()
    admin = made["admin"].removeprefix("Bearer ")
    key_id, secret = admin.split("_")[1:]
    return made | {
        "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expired}",
        "malformed": "Bearer wm_not_a_key",
        "wrong secret": f"Bearer wm_{key_id}_{'a' * len(secret)}",
        "unknown id": f"Bearer wm_{'a' * len(key_id)}_{secret}",
        "basic scheme": f"Basic {admin}",
        "empty bearer": "Bearer ",
    }


async def send(session: aiohttp.ClientSession, base: str, case: Case) -> Outcome:
    headers = {"Content-Type": "application/json"}
    if case.authorization is not None:
        headers["Authorization"] = case.authorization
    body = None if case.route.http_method == "GET" else b"{}"
    url = base + concrete_path(case.route)
    async with session.request(case.route.http_method, url, data=body, headers=headers) as got:
        text = await got.read()
    return Outcome(got.status, json.loads(text) if text else {})


def error_info(body: dict[str, Any]) -> dict[str, Any]:
    for detail in body.get("error", {}).get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return dict(detail)
    return {}


def reason_of(body: dict[str, Any]) -> str:
    return str(error_info(body).get("reason", ""))


def refused_by_gateway(outcome: Outcome, status: int, reasons: tuple[str, ...]) -> bool:
    """The gateway itself answered `status` (its ErrorInfo domain): the call never left it,
    the services' own check is a second lock, not the one this matrix tests."""
    info = error_info(outcome.body)
    return (
        outcome.status == status and info.get("domain") == DOMAIN and info.get("reason") in reasons
    )


def mismatch(case: Case, outcome: Outcome) -> str | None:
    """What is wrong with the outcome of the case, or None when it is the allowed one."""
    got = f"{outcome.status} {error_info(outcome.body)}"
    if case.caller not in EXTERNAL_ROLES:
        if not refused_by_gateway(outcome, 401, ("API_KEY_MISSING", "API_KEY_INVALID")):
            return f"{case.describe()}: {got}, expected 401 from the gateway"
        return None
    if case.caller in roles_of(case.route.rpc_path):
        if outcome.status in (401, 403):
            return f"{case.describe()}: allowed but {got}"
        return None
    if not refused_by_gateway(outcome, 403, ("SCOPE_MISSING",)):
        return f"{case.describe()}: {got}, expected 403 SCOPE_MISSING from the gateway"
    return None


async def test_every_route_by_every_caller_gives_exactly_the_allowed_outcome(
    suite: Suite, gateway: RunningGateway
) -> None:
    callers = await keys(suite)
    routes = route_table().routes
    cases = [Case(route, "no key", None) for route in routes] + [
        Case(route, caller, header) for route in routes for caller, header in callers.items()
    ]
    base = f"http://127.0.0.1:{gateway.http_port}"
    outcomes: list[Outcome] = []
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(cases), CHUNK):
            chunk = cases[start : start + CHUNK]
            outcomes += await asyncio.gather(*(send(session, base, case) for case in chunk))
    wrong = [m for c, o in zip(cases, outcomes, strict=True) if (m := mismatch(c, o))]
    assert not wrong, "\n".join(wrong)
    # the matrix is not vacuous: every role reaches some route and is refused some other
    for role in EXTERNAL_ROLES:
        reached = [r for r in routes if role in roles_of(r.rpc_path)]
        assert reached and len(reached) < len(routes), role
    assert any(not roles_of(r.rpc_path) for r in routes)  # internal routes: 403 to everyone


async def test_refusals_name_the_reason_and_status(suite: Suite, gateway: RunningGateway) -> None:
    callers = await keys(suite)
    route = next(r for r in route_table().routes if r.method == "GetMember")
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession() as session:
        missing = await send(session, base, Case(route, "no key", None))
        revoked = await send(session, base, Case(route, "revoked", callers["revoked"]))
        expired = await send(session, base, Case(route, "expired", callers["expired"]))
        scope = await send(session, base, Case(route, "settlement", callers["settlement"]))
    assert reason_of(missing.body) == "API_KEY_MISSING"
    for refused in (revoked, expired):
        assert refused.status == 401 and refused.body["error"]["status"] == "UNAUTHENTICATED"
        assert reason_of(refused.body) == "API_KEY_INVALID"
    assert scope.status == 403 and scope.body["error"]["status"] == "PERMISSION_DENIED"
