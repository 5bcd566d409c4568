"""A day's queue through the console's endpoints, without a browser: the queue's filters and
paging with them, extending a deadline, cancelling for the member, a stopped fulfilment
rejected and a cancellation sent twice replaying under their idempotency keys, browsing
audit events with their filters, actors named by their API key, and the session cookie's
Secure flag."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from membership.privacy.v1 import data_rights_pb2 as pb

from gateway import store
from gateway.console_names import MAX_SUBJECTS, ActorNames
from gateway.keys import create_key, parse_key, revoke_key
from gateway.server import RunningGateway, start_gateway
from tests.service.test_data_request_lifecycle import rights
from tests.service.test_gateway_console import Console, browser_session, gateway, reason_of
from tests.service.test_gateway_rest import SETTINGS, new_key
from tests.support.accounts import next_phone, register
from tests.support.data_rights import create, verify
from tests.support.suite import Suite

__all__ = ["browser_session", "gateway"]  # fixtures, imported for pytest

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION
CORRECTION = pb.DATA_REQUEST_TYPE_CORRECTION
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def clock(suite: Suite) -> Iterator[list[datetime]]:
    now = [datetime.now(SHANGHAI)]
    service = rights(suite)
    original = service.clock
    service.clock = lambda: now[0]
    yield now
    service.clock = original


async def signed_in(
    gateway: RunningGateway, http: aiohttp.ClientSession, suite: Suite
) -> tuple[Console, str]:
    """A console signed in with a new officer key, and that key's id."""
    console = Console(gateway, http)
    key = await new_key(suite, "officer")
    status, _, _ = await console.sign_in(key)
    assert status == 200
    return console, parse_key(key)[0]


async def names_of(console: Console, query: dict[str, Any]) -> list[str]:
    status, page, _ = await console.request(
        "GET", "/console/api/v1/dataRequests?" + urlencode(query, doseq=True)
    )
    assert status == 200, page
    return [r["name"] for r in page.get("dataRequests", [])]


async def test_the_queue_is_filtered_by_state_type_overdue_and_member_and_pages_with_them(
    suite: Suite,
    gateway: RunningGateway,
    browser_session: aiohttp.ClientSession,
    clock: list[datetime],
) -> None:
    one, other = await register(suite), await register(suite)
    real_now = clock[0]
    clock[0] = real_now - timedelta(days=60)
    late = await create(suite, one.member_id, ACCESS)
    clock[0] = real_now
    restriction = await create(suite, one.member_id, RESTRICTION)
    verified = (await verify(suite, (await create(suite, other.member_id, ACCESS)).name)).name
    console, _ = await signed_in(gateway, browser_session, suite)

    received = {"states": "DATA_REQUEST_STATE_RECEIVED"}
    assert set(await names_of(console, received)) == {late.name, restriction.name}
    open_states = ["DATA_REQUEST_STATE_RECEIVED", "DATA_REQUEST_STATE_IDENTITY_VERIFIED"]
    assert len(await names_of(console, {"states": open_states})) == 3
    assert set(await names_of(console, {"types": "DATA_REQUEST_TYPE_ACCESS"})) == {
        late.name,
        verified,
    }
    assert await names_of(console, {"overdueOnly": "true"}) == [late.name]
    mine = {"member": f"members/{one.member_id}"}
    assert set(await names_of(console, mine)) == {late.name, restriction.name}
    # pages of one, the filter carried by every page ("Load more")
    first = {**mine, "pageSize": 1}
    status, page, _ = await console.request(
        "GET", "/console/api/v1/dataRequests?" + urlencode(first)
    )
    assert status == 200 and [r["name"] for r in page["dataRequests"]] == [late.name]
    following = {**first, "pageToken": page["nextPageToken"]}
    assert await names_of(console, following) == [restriction.name]
    # a token of other filters is refused, not silently reinterpreted
    status, body, _ = await console.request(
        "GET",
        "/console/api/v1/dataRequests?"
        + urlencode({"pageSize": 1, "pageToken": page["nextPageToken"]}),
    )
    assert status == 400, body
    status, _, _ = await console.request(
        "GET", "/console/api/v1/dataRequests?states=DATA_REQUEST_STATE_NOPE"
    )
    assert status == 400


async def test_an_officer_extends_a_deadline_with_a_reason(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    member = await register(suite)
    request = await create(suite, member.member_id, ACCESS)
    console, key_id = await signed_in(gateway, browser_session, suite)
    path = f"/console/api/v1/{request.name}:extendDeadline"
    status, body, _ = await console.request(
        "POST", path, {"extraWorkingDays": 5, "reason": "", "requestId": "x-1"}
    )
    assert status == 400, body
    ask = {"extraWorkingDays": 5, "reason": "Records are archived off site.", "requestId": "x-2"}
    status, body, _ = await console.request("POST", path, ask, csrf=False)
    assert status == 403 and reason_of(body) == "CSRF_TOKEN_INVALID"
    status, extended, _ = await console.request("POST", path, ask)
    assert status == 200, extended
    assert extended["workingDays"] == request.working_days + 5
    before = (request.due_date.year, request.due_date.month, request.due_date.day)
    due = extended["dueDate"]
    assert (due["year"], due["month"], due["day"]) > before
    [extension] = extended["extensions"]
    assert extension["actor"] == f"key:{key_id}" and extension["extraWorkingDays"] == 5
    assert extended["events"][-1]["action"] == "deadline.extended"
    # the same request id again: the same answer, not a second extension
    status, again, _ = await console.request("POST", path, ask)
    assert status == 200 and again["workingDays"] == extended["workingDays"]


async def test_an_officer_cancels_for_the_member_before_fulfilment_only(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    member = await register(suite)
    request = await create(suite, member.member_id, RESTRICTION)
    console, key_id = await signed_in(gateway, browser_session, suite)
    path = f"/console/api/v1/{request.name}:cancel"
    status, body, _ = await console.request("POST", path, {}, csrf=False)
    assert status == 403 and reason_of(body) == "CSRF_TOKEN_INVALID"
    status, cancelled, _ = await console.request("POST", path, {})
    assert status == 200 and cancelled["state"] == "DATA_REQUEST_STATE_CANCELLED", cancelled
    last = cancelled["events"][-1]
    assert last["action"] == "cancelled" and last["actor"] == f"key:{key_id}"
    # a final request cannot be cancelled (a rejected one, here)
    rejected = await create(suite, member.member_id, ACCESS)
    status, _, _ = await console.request(
        "POST", f"/console/api/v1/{rejected.name}:reject", {"reason": "duplicate"}
    )
    assert status == 200
    status, body, _ = await console.request("POST", f"/console/api/v1/{rejected.name}:cancel", {})
    assert status == 400 and reason_of(body) == "ILLEGAL_TRANSITION", body


def actions_of(request: dict[str, Any]) -> list[str]:
    return [e["action"] for e in request.get("events", [])]


async def test_a_stopped_fulfilment_rejected_twice_with_one_key_replays(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    """The console's reject, sent again with its key (a double click, a network retry),
    gets the first answer; another key, or none, is the illegal move it is."""
    taken = next_phone()
    await register(suite, taken)
    member = await register(suite)
    created = await create(
        suite, member.member_id, CORRECTION, correction=pb.Correction(phone=taken)
    )
    await verify(suite, created.name)
    console, _ = await signed_in(gateway, browser_session, suite)
    approve = f"/console/api/v1/{created.name}:approve"
    status, stopped, _ = await console.request("POST", approve, {"requestId": "console-ok-1"})
    assert status == 200 and stopped["state"] == "DATA_REQUEST_STATE_IN_PROGRESS", stopped
    # what the page reads to show the stop (the proto JSON mapping's names)
    failure = stopped["stepFailure"]
    assert {k: failure[k] for k in ("step", "service", "code", "reason")} == {
        "step": "accounts.update",
        "service": "accounts",
        "code": "ALREADY_EXISTS",
        "reason": "PHONE_TAKEN",
    }
    assert failure["createTime"] and "retriesExhausted" not in failure  # false: left out
    assert actions_of(stopped)[-2:] == ["step.accounts.update.failed", "fulfilment.stopped"]
    assert taken not in str(stopped)
    listed = await names_of(console, {"member": f"members/{member.member_id}"})
    assert listed == [created.name]
    status, page, _ = await console.request(
        "GET", f"/console/api/v1/dataRequests?member=members/{member.member_id}"
    )
    assert page["dataRequests"][0]["stepFailure"]["reason"] == "PHONE_TAKEN"

    reject = f"/console/api/v1/{created.name}:reject"
    ask = {"reason": "The phone number belongs to another member.", "requestId": "console-r1"}
    status, rejected, _ = await console.request("POST", reject, ask)
    assert status == 200 and rejected["state"] == "DATA_REQUEST_STATE_REJECTED", rejected
    assert rejected["stepFailure"]["reason"] == "PHONE_TAKEN"  # kept, as the cause
    status, again, _ = await console.request("POST", reject, ask)
    assert status == 200 and again == rejected  # the first answer, not a second rejection
    assert actions_of(again).count("rejected") == 1
    status, body, _ = await console.request("POST", reject, {**ask, "requestId": "console-r2"})
    assert status == 400 and reason_of(body) == "ILLEGAL_TRANSITION", body
    status, body, _ = await console.request("POST", reject, {"reason": ask["reason"]})
    assert status == 400 and reason_of(body) == "ILLEGAL_TRANSITION", body
    status, body, _ = await console.request("POST", reject, {**ask, "reason": "Another reason."})
    assert status == 409 and reason_of(body) == "IDEMPOTENCY_KEY_REUSED", body


async def test_a_cancellation_submitted_twice_replays(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    member = await register(suite)
    request = await create(suite, member.member_id, RESTRICTION)
    console, key_id = await signed_in(gateway, browser_session, suite)
    cancel = f"/console/api/v1/{request.name}:cancel"
    ask = {"requestId": "console-c1"}
    # a double click that got through twice: both calls at once, one cancellation
    answers = await asyncio.gather(*(console.request("POST", cancel, ask) for _ in range(2)))
    assert [status for status, _, _ in answers] == [200, 200], answers
    first, second = (body for _, body, _ in answers)
    assert first == second and first["state"] == "DATA_REQUEST_STATE_CANCELLED"
    assert actions_of(first).count("cancelled") == 1
    assert first["events"][-1]["actor"] == f"key:{key_id}"
    # later, the answer lost and the call sent again: still the first answer
    status, again, _ = await console.request("POST", cancel, ask)
    assert status == 200 and again == first
    status, body, _ = await console.request("POST", cancel, {"requestId": "console-c2"})
    assert status == 400 and reason_of(body) == "ILLEGAL_TRANSITION", body
    # a key that cancelled cannot reject
    status, body, _ = await console.request(
        "POST", f"/console/api/v1/{request.name}:reject", {"reason": "dup", **ask}
    )
    assert status == 409 and reason_of(body) == "IDEMPOTENCY_KEY_REUSED", body


async def audit_page(console: Console, query: dict[str, Any]) -> dict[str, Any]:
    status, page, _ = await console.request(
        "GET", "/console/api/v1/auditEvents?" + urlencode(query)
    )
    assert status == 200, page
    return dict(page)


async def test_audit_events_are_browsed_with_filters_and_pages(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    member = await register(suite)
    start = datetime.now(UTC) - timedelta(seconds=1)
    console, key_id = await signed_in(gateway, browser_session, suite)
    first = await create(suite, member.member_id, ACCESS)
    second = await create(suite, member.member_id, RESTRICTION)
    status, _, _ = await console.request(
        "POST", f"/console/api/v1/{second.name}:reject", {"reason": "asked twice"}
    )
    assert status == 200
    end = datetime.now(UTC) + timedelta(seconds=1)

    mine = {"subjectId": member.member_id, "action": "data_request."}
    page = await audit_page(console, {**mine, "pageSize": 2})
    events = page["auditEvents"]
    assert [e["action"] for e in events] == ["data_request.created", "data_request.created"]
    assert [e["requestId"] for e in events] == [first.name, second.name]
    rest = await audit_page(console, {**mine, "pageSize": 2, "pageToken": page["nextPageToken"]})
    assert [e["action"] for e in rest["auditEvents"]] == ["data_request.rejected"]
    assert "nextPageToken" not in rest
    by_key = await audit_page(console, {"actor": f"key:{key_id}"})
    assert [e["action"] for e in by_key["auditEvents"]] == ["data_request.rejected"]
    timed = {"subjectId": member.member_id, "startTime": _rfc3339(start)}
    assert len((await audit_page(console, {**timed, "endTime": _rfc3339(end)}))["auditEvents"]) >= 3
    assert "auditEvents" not in await audit_page(console, {**timed, "startTime": _rfc3339(end)})
    status, body, _ = await console.request(
        "GET", "/console/api/v1/auditEvents?startTime=yesterday"
    )
    assert status == 400, body


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def test_actors_are_named_by_their_api_key_and_services_as_services(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    console = Console(gateway, browser_session)
    status, _, _ = await console.request("GET", "/console/actors?id=privacy")
    assert status == 401
    console, key_id = await signed_in(gateway, browser_session, suite)
    conn = await asyncpg.connect(suite.dsn)
    try:
        record, _ = await create_key(conn, "Compliance desk", "officer", None)
        await revoke_key(conn, record.key_id)  # who acted then keeps a name
    finally:
        await conn.close()
    subjects = [
        f"key:{key_id}",
        f"key:{record.key_id}",
        "key:aaaaaaaaaaaaaaaa",
        "privacy",
        "service:accounts",
        "officer-1",
    ]
    status, body, _ = await console.request(
        "GET", "/console/actors?" + urlencode({"id": subjects}, doseq=True)
    )
    assert status == 200, body
    assert body["actors"] == {
        f"key:{key_id}": {"kind": "api_key", "name": "test officer", "role": "officer"},
        f"key:{record.key_id}": {"kind": "api_key", "name": "Compliance desk", "role": "officer"},
        "key:aaaaaaaaaaaaaaaa": {"kind": "unknown", "name": "key:aaaaaaaaaaaaaaaa"},
        "privacy": {"kind": "service", "name": "privacy service", "role": "service:privacy"},
        "service:accounts": {
            "kind": "service",
            "name": "accounts service",
            "role": "service:accounts",
        },
        "officer-1": {"kind": "unknown", "name": "officer-1"},
    }
    too_many = urlencode({"id": [f"s{n}" for n in range(MAX_SUBJECTS + 1)]}, doseq=True)
    status, body, _ = await console.request("GET", f"/console/actors?{too_many}")
    assert status == 400 and reason_of(body) == "INVALID_REQUEST"
    status, _, _ = await console.request("GET", "/console/actors?id=" + "x" * 200)
    assert status == 400


async def test_key_names_are_cached_for_a_while_and_bounded(suite: Suite) -> None:
    now = [0.0]
    pool = await asyncpg.create_pool(suite.dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await store.migrate_schema(conn)  # no gateway runs here to do it
            record, _ = await create_key(conn, "Desk A", "officer", None)
            other, _ = await create_key(conn, "Desk B", "admin", None)
        names = ActorNames(pool, ttl_s=60.0, max_cached=1, clock=lambda: now[0])
        subject = f"key:{record.key_id}"
        assert (await names.resolve([subject]))[subject].name == "Desk A"
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE gateway.api_keys SET name = 'Desk A2' WHERE key_id = $1", record.key_id
            )
        assert (await names.resolve([subject]))[subject].name == "Desk A"  # cached
        now[0] = 61.0
        assert (await names.resolve([subject]))[subject].name == "Desk A2"
        await names.resolve([f"key:{other.key_id}"])
        assert len(names) == 1  # the least recently used went
    finally:
        await pool.close()


@pytest.fixture
async def secure_gateway(suite: Suite) -> AsyncIterator[RunningGateway]:
    """The gateway as deployed: TLS in front of it, so its cookies are Secure."""
    running = await start_gateway(suite.settings, replace(SETTINGS, secure_cookies=True))
    yield running
    await running.stop()


async def test_the_session_cookie_is_secure_unless_set_off(
    suite: Suite,
    gateway: RunningGateway,
    secure_gateway: RunningGateway,
    browser_session: aiohttp.ClientSession,
) -> None:
    key = await new_key(suite, "officer")
    status, _, response = await Console(secure_gateway, browser_session).sign_in(key)
    cookie = response.headers["Set-Cookie"]
    assert status == 200 and "wm_console=" in cookie and "Secure" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie

    plain = Console(gateway, browser_session)
    status, _, response = await plain.sign_in(key)
    assert status == 200 and "Secure" not in response.headers["Set-Cookie"]
    # the cookie is cleared with the attributes it was set with
    status, _, response = await plain.request("DELETE", "/console/session")
    assert status == 200 and "Secure" not in response.headers["Set-Cookie"]
    # a proxy that says the browser used https adds the flag, whatever the setting
    status, _, response = await plain.request(
        "POST",
        "/console/session",
        {"api_key": key},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert status == 200 and "Secure" in response.headers["Set-Cookie"]
