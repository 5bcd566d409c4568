"""The compliance console at /console: officer sessions (cookie, CSRF), the proxy to the REST
API with the session's key, the export download, and the page itself in headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from membership.privacy.v1 import data_rights_pb2 as pb
from yarl import URL

from gateway.server import RunningGateway
from tests.service.test_data_request_lifecycle import rights
from tests.service.test_gateway_rest import gateway, new_key
from tests.support.accounts import fetchval, next_phone, register
from tests.support.data_rights import create, fulfilled, member_with_ledger
from tests.support.suite import Suite

__all__ = ["gateway"]  # the fixture, imported for pytest

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def clock(suite: Suite) -> Iterator[list[datetime]]:
    """The privacy service's clock, set by the test (a one-element list)."""
    now = [datetime.now(ZoneInfo("Asia/Shanghai"))]
    service = rights(suite)
    original = service.clock
    service.clock = lambda: now[0]
    yield now
    service.clock = original


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
    assert "Path=/console" in cookie and "Secure" not in cookie  # plain http here
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


# --- in a real browser ----------------------------------------------------------------


async def test_the_console_in_headless_chromium(
    suite: Suite, gateway: RunningGateway, clock: list[datetime], tmp_path: Path
) -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    playwright_api = pytest.importorskip("playwright.async_api", reason="pip install playwright")

    member = await register(suite)
    real_now = clock[0]
    clock[0] = real_now - timedelta(days=60)
    late = await create(suite, member.member_id, ACCESS)
    clock[0] = real_now
    fresh = await create(suite, member.member_id, RESTRICTION)
    officer = await new_key(suite, "officer")

    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(f"http://127.0.0.1:{gateway.http_port}/console")
            await page.fill("#api-key", officer)
            await page.click("#signin-form button[type=submit]")
            rows = page.locator("#queue tbody tr")
            await playwright_api.expect(rows).to_have_count(2)
            assert await rows.nth(0).get_attribute("data-name") == late.name
            assert "overdue" in (await rows.nth(0).get_attribute("class") or "")
            assert "overdue" not in (await rows.nth(1).get_attribute("class") or "")
            assert await rows.nth(1).get_attribute("data-name") == fresh.name
            await playwright_api.expect(page.locator("#audit-status .intact")).to_be_visible()

            await rows.nth(0).click()
            await playwright_api.expect(page.locator("#timeline li")).not_to_have_count(0)
            await page.click("#reject-btn")
            message = page.locator("#message")
            await playwright_api.expect(message).to_have_class("error")
            await playwright_api.expect(message).to_contain_text("reason is required")
            await page.fill("#reject-reason", "Identity could not be established.")
            await page.click("#reject-btn")
            await playwright_api.expect(message).to_contain_text("rejected")
            await playwright_api.expect(message).not_to_have_class("error")
            # the queue reloads: the rejected request is final now, after the open one
            await playwright_api.expect(rows.nth(0)).to_have_attribute("data-name", fresh.name)
            await playwright_api.expect(page.locator("#queue tr.overdue")).to_have_count(0)
            await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
        finally:
            await browser.close()
    assert (tmp_path / "console.png").stat().st_size > 0
