"""The compliance console at /console: officer sessions (cookie, CSRF), the proxy to the REST
API with the session's key, the export download. The page itself runs in headless Chromium in
test_gateway_console_browser.py; the queue filters, deadline extension, cancellation, closing
replayed under its idempotency key, audit browsing and actor names in
test_gateway_console_work.py."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from membership.privacy.v1 import data_rights_pb2 as pb
from yarl import URL

from gateway.server import RunningGateway, start_gateway
from tests.service.test_gateway_rest import SETTINGS, new_key
from tests.support.accounts import fetchval, next_phone, register
from tests.support.data_rights import create, fulfilled, member_with_ledger
from tests.support.suite import Suite

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
async def gateway(suite: Suite) -> AsyncIterator[RunningGateway]:
    """The gateway as `make run` starts it: plain http on 127.0.0.1, so no Secure cookies
    (a browser, and aiohttp's jar, would not send them back over http)."""
    running = await start_gateway(suite.settings, replace(SETTINGS, secure_cookies=False))
    yield running
    await running.stop()


@pytest.fixture
async def browser_session() -> AsyncIterator[aiohttp.ClientSession]:
    # the gateway listens on 127.0.0.1: the jar must accept cookies from an IP address
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


class Console:
    """A signed-in (or not) console user, as a browser would be."""

    def __init__(self, gateway: RunningGateway, session: aiohttp.ClientSession) -> None:
        self.base = f"http://127.0.0.1:{gateway.http_port}"
        self.http = session
        self.csrf = ""

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        sent = dict(headers or {})
        if csrf and self.csrf:
            sent["X-CSRF-Token"] = self.csrf
        data = None if body is None else json.dumps(body)
        if data is not None:
            sent["Content-Type"] = "application/json"
        async with self.http.request(
            method, self.base + path, data=data, headers=sent, allow_redirects=False
        ) as response:
            raw = await response.read()
            is_json = response.content_type == "application/json"
            return response.status, json.loads(raw) if is_json and raw else raw, response

    async def sign_in(self, key: str) -> tuple[int, Any, aiohttp.ClientResponse]:
        status, body, response = await self.request("POST", "/console/session", {"api_key": key})
        if status == 200:
            self.csrf = body["csrf_token"]
        return status, body, response


def reason_of(body: dict[str, Any]) -> str:
    error = body["error"]
    infos = [d["reason"] for d in error.get("details", []) if "reason" in d]
    return infos[0] if infos else str(error.get("reason", ""))


async def test_an_officer_signs_in_and_state_changes_need_the_csrf_token(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    member = await register(suite)
    request = await create(suite, member.member_id, RESTRICTION)
    console = Console(gateway, browser_session)
    status, _, _ = await console.request("GET", "/console/api/v1/dataRequests")
    assert status == 401

    status, body, response = await console.sign_in(await new_key(suite, "officer"))
    assert status == 200 and body["role"] == "officer" and body["csrf_token"]
    cookie = response.headers["Set-Cookie"]
    assert "wm_console=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/console" in cookie and "Secure" not in cookie  # set off, as by make run
    status, page, _ = await console.request("GET", "/console/api/v1/dataRequests")
    assert status == 200 and [r["name"] for r in page["dataRequests"]] == [request.name]

    reject = f"/console/api/v1/{request.name}:reject"
    status, body, _ = await console.request("POST", reject, {"reason": "x"}, csrf=False)
    assert status == 403 and reason_of(body) == "CSRF_TOKEN_INVALID"
    status, body, _ = await console.request(
        "POST", reject, {"reason": "x"}, csrf=False, headers={"X-CSRF-Token": "forged"}
    )
    assert status == 403
    status, body, _ = await console.request("POST", reject, {"reason": ""})
    assert status == 400 and reason_of(body) == "REASON_REQUIRED"
    status, body, _ = await console.request("POST", reject, {"reason": "not a member of ours"})
    assert status == 200 and body["state"] == "DATA_REQUEST_STATE_REJECTED", body
    assert body["rejectionReason"] == "not a member of ours"


async def test_only_officer_and_admin_keys_sign_in(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    console = Console(gateway, browser_session)
    status, body, response = await console.sign_in(await new_key(suite, "wallet-backend"))
    assert status == 403 and reason_of(body) == "ROLE_NOT_ALLOWED"
    assert "Set-Cookie" not in response.headers
    status, _, _ = await console.sign_in("wm_bogus_key")
    assert status == 401
    status, _, _ = await console.request("POST", "/console/session", {})
    assert status == 400
    status, _, _ = await console.request(
        "POST",
        "/console/session",
        {"api_key": await new_key(suite, "officer")},
        headers={"Origin": "https://evil.example"},
    )
    assert status == 403
    status, body, _ = await console.sign_in(await new_key(suite, "admin"))
    assert status == 200 and body["role"] == "admin"


async def test_a_form_sign_in_redirects_to_the_page(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    console = Console(gateway, browser_session)
    key = await new_key(suite, "officer")
    async with browser_session.post(
        console.base + "/console/session", data={"api_key": key}, allow_redirects=False
    ) as response:
        assert response.status == 303 and response.headers["Location"] == "/console/"
    status, body, _ = await console.request("GET", "/console/session")
    assert status == 200 and body["role"] == "officer"
    status, page, response = await console.request("GET", "/console/")
    assert status == 200 and b"Compliance console" in page
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    status, _, _ = await console.request("GET", "/console/static/../server.py")
    assert status == 404


async def test_signing_out_ends_the_session(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    console = Console(gateway, browser_session)
    await console.sign_in(await new_key(suite, "officer"))
    jar = browser_session.cookie_jar.filter_cookies(URL(console.base + "/console/"))
    cookie = jar["wm_console"]
    status, _, _ = await console.request("DELETE", "/console/session", csrf=False)
    assert status == 403  # signing out is a state change too
    status, _, _ = await console.request("DELETE", "/console/session")
    assert status == 200
    # the old cookie, sent again by someone who kept it, opens nothing
    status, _, _ = await console.request(
        "GET", "/console/api/v1/purposes", headers={"Cookie": f"wm_console={cookie.value}"}
    )
    assert status == 401
    status, _, _ = await console.request("GET", "/console/session")
    assert status == 401


async def test_the_proxy_calls_only_console_routes_and_masked_views(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    phone = next_phone()
    member = await register(suite, phone)
    console = Console(gateway, browser_session)
    await console.sign_in(await new_key(suite, "officer"))
    status, got, _ = await console.request("GET", f"/console/api/v1/members/{member.member_id}")
    assert status == 200 and got["view"] in ("MEMBER_VIEW_MASKED", "MASKED")
    status, body, _ = await console.request(
        "GET", f"/console/api/v1/members/{member.member_id}?view=MEMBER_VIEW_FULL"
    )
    assert status == 403 and reason_of(body) == "PURPOSE_REQUIRED"
    # in clear with a stated purpose, and the privacy service audits the decryption
    status, full, _ = await console.request(
        "GET",
        f"/console/api/v1/members/{member.member_id}"
        "?view=MEMBER_VIEW_FULL&purpose=dsr%20identity%20check",
    )
    assert status == 200 and "*" not in full["phone"] and full["phone"].endswith(phone[-8:])
    audited = await fetchval(
        suite.dsn,
        "SELECT count(*) FROM privacy.audit_log WHERE action = 'fields.decrypt'"
        " AND subject_id = $1 AND purpose = 'dsr identity check'",
        member.member_id,
    )
    assert audited == 1
    status, body, _ = await console.request("POST", "/console/api/v1/keyRing:rotate", {})
    assert status == 403 and reason_of(body) == "NOT_IN_CONSOLE"
    status, got, _ = await console.request("GET", "/console/api/v1/purposes")
    assert status == 200 and got["purposes"]
    status, got, _ = await console.request("GET", "/console/api/v1/auditEvents:verifyChain")
    assert status == 200 and got["intact"] is True
    status, got, _ = await console.request("GET", "/console/api/v1/consentStatistics")
    assert status == 200, got
    assert [p["purpose"] for p in got["purposes"]] and "computeTime" in got


async def test_failed_sign_ins_are_limited_per_client_address(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    console = Console(gateway, browser_session)
    key = await new_key(suite, "officer")
    signed_in = Console(gateway, browser_session)
    assert (await signed_in.sign_in(key))[0] == 200
    for _ in range(9):
        assert (await console.sign_in("wm_bogus_key"))[0] == 401
    # a valid key of a role the console is not for counts as a failure too
    assert (await console.sign_in(await new_key(suite, "wallet-backend")))[0] == 403
    status, body, response = await console.sign_in(key)
    assert status == 429 and reason_of(body) == "SIGN_IN_ATTEMPTS_EXCEEDED"
    assert 1 <= int(response.headers["Retry-After"]) <= 300
    assert "Set-Cookie" not in response.headers
    # a forwarded-for header is the client's own word: it does not make another client
    status, _, _ = await console.request(
        "POST", "/console/session", {"api_key": key}, headers={"X-Forwarded-For": "192.0.2.7"}
    )
    assert status == 429
    # only signing in is held up: the session opened before keeps working
    status, _, _ = await signed_in.request("GET", "/console/api/v1/purposes")
    assert status == 200


async def test_parallel_sign_ins_cannot_pass_the_limit_together(
    gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    console = Console(gateway, browser_session)
    outcomes = await asyncio.gather(*(console.sign_in("wm_bogus_key") for _ in range(30)))
    statuses = sorted(status for status, _, _ in outcomes)
    assert statuses.count(401) == 10 and statuses.count(429) == 20


async def test_the_export_downloads_as_one_zip(
    suite: Suite, gateway: RunningGateway, browser_session: aiohttp.ClientSession
) -> None:
    member_id = await member_with_ledger(suite, payments=1)
    done = await fulfilled(suite, member_id, ACCESS)
    request_id = done.name.removeprefix("dataRequests/")
    console = Console(gateway, browser_session)
    await console.sign_in(await new_key(suite, "officer"))
    status, _, _ = await console.request("POST", f"/console/export/{request_id}", csrf=False)
    assert status == 403
    status, archive, response = await console.request("POST", f"/console/export/{request_id}")
    assert status == 200 and response.content_type == "application/zip"
    assert "attachment" in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
        assert "bundle.json" in bundle.namelist()
