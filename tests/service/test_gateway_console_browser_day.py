"""The steps of an officer's day in the console, driven in Chromium by
test_gateway_console_browser.py::test_a_days_queue_in_headless_chromium (this module holds no
test of its own): filter the queue, reload with the filters, extend a deadline, cancel for the
member, approve a correction whose step is refused and decide it (approve again, then reject
through a lost answer that must replay), read a fulfilment's steps, browse the audit events
of a member."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from membership.privacy.v1 import data_rights_pb2 as pb

from gateway.keys import create_key
from gateway.server import RunningGateway
from tests.support.accounts import next_phone, register
from tests.support.data_rights import create, fulfilled, get_request, verify
from tests.support.suite import Suite

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION
CORRECTION = pb.DATA_REQUEST_TYPE_CORRECTION
SHANGHAI = ZoneInfo("Asia/Shanghai")
KEY_NAME = "Compliance desk Li"
BEIJING_MINUTE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC\+8")
BEIJING_SECOND = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\+8$")


@dataclass
class Day:
    """The requests of the day: member `a` has an overdue ACCESS and a fresh RESTRICTION,
    `b` a verified ACCESS, `c` a RESTRICTION to cancel, `d` a fulfilled RESTRICTION, `e` a
    verified CORRECTION to a phone number another member holds (its step will be refused)."""

    a: str
    b: str
    c: str
    d: str
    e: str
    late: pb.DataRequest
    restriction: pb.DataRequest
    verified: str
    to_cancel: str
    done: str
    to_stop: str


async def the_day(suite: Suite, clock: list[datetime]) -> Day:
    a, b, c, d = [(await register(suite)).member_id for _ in range(4)]
    real_now = clock[0]
    clock[0] = real_now - timedelta(days=60)
    late = await create(suite, a, ACCESS)
    clock[0] = real_now
    restriction = await create(suite, a, RESTRICTION)
    verified = (await verify(suite, (await create(suite, b, ACCESS)).name)).name
    to_cancel = (await create(suite, c, RESTRICTION)).name
    done = (await fulfilled(suite, d, RESTRICTION)).name
    for _ in range(100):  # fulfilment usually ends within the approval; bounded wait
        if (await get_request(suite, done)).state == pb.DATA_REQUEST_STATE_COMPLETED:
            break
        await asyncio.sleep(0.1)
    taken = next_phone()
    await register(suite, taken)  # the member who holds the number (no request)
    e = (await register(suite)).member_id
    correction = await create(suite, e, CORRECTION, correction=pb.Correction(phone=taken))
    to_stop = (await verify(suite, correction.name)).name
    return Day(a, b, c, d, e, late, restriction, verified, to_cancel, done, to_stop)


async def officer_key(suite: Suite) -> str:
    conn = await asyncpg.connect(suite.dsn)
    try:
        _, key = await create_key(conn, KEY_NAME, "officer", None)
    finally:
        await conn.close()
    return key


async def work_a_day_in_the_console(
    suite: Suite,
    gateway: RunningGateway,
    clock: list[datetime],
    browser: Any,
    expect: Any,
    tmp_path: Path,
) -> None:
    day = await the_day(suite, clock)
    key = await officer_key(suite)
    # the browser's own zone is not Beijing's: the console must not show its local time
    context = await browser.new_context(
        viewport={"width": 1280, "height": 1400}, timezone_id="America/New_York"
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"http://127.0.0.1:{gateway.http_port}/console/?pageSize=2")
    await page.fill("#api-key", key)
    await page.click("#signin-form button[type=submit]")
    await expect(page.locator("#who-key")).to_contain_text(KEY_NAME)
    await expect(page.locator("#zone-note")).to_contain_text("Beijing time")
    await expect(page.locator("#zone-note")).to_contain_text("UTC+8")

    await filter_the_queue(page, expect, day)
    await extend_a_deadline(suite, page, expect, day)
    await cancel_for_the_member(suite, page, expect, day)
    await decide_a_stopped_correction(suite, page, expect, day, tmp_path)
    await read_the_steps(page, expect, day)
    await browse_the_audit_events(page, expect, day)
    await page.screenshot(path=str(tmp_path / "console-day.png"), full_page=True)
    assert errors == []
    await context.close()


async def queue_names(page: Any, expect: Any) -> list[str]:
    """The queue's requests once its load finished (a filter's change starts one at once)."""
    await expect(page.locator("#queue")).to_have_attribute("aria-busy", "false")
    rows = page.locator("#queue tbody tr")
    return [await rows.nth(i).get_attribute("data-name") for i in range(await rows.count())]


async def filter_the_queue(page: Any, expect: Any, day: Day) -> None:
    rows = page.locator("#queue tbody tr")
    more = page.locator("#queue-more")
    await expect(rows).to_have_count(2)  # six requests, pages of two
    await page.select_option("#filter-state", "RECEIVED")
    await expect(page).to_have_url(re.compile(r"state=RECEIVED"))
    assert len(await queue_names(page, expect)) == 2
    await expect(page.locator("#queue-count")).to_contain_text("matching the filters")
    await more.click()  # the second page comes with the same filter
    await expect(rows).to_have_count(3)
    await expect(more).to_be_hidden()
    assert set(await queue_names(page, expect)) == {
        day.late.name,
        day.restriction.name,
        day.to_cancel,
    }
    for i in range(3):
        await expect(rows.nth(i).locator("td").nth(2)).to_have_text("received")

    await page.select_option("#filter-state", "")
    await page.select_option("#filter-type", "ACCESS")
    assert set(await queue_names(page, expect)) == {day.late.name, day.verified}
    await page.check("#filter-overdue")
    assert await queue_names(page, expect) == [day.late.name]
    await expect(page).to_have_url(re.compile(r"type=ACCESS.*overdue=1"))

    await page.click("#filter-clear")
    await page.fill("#filter-member", f"members/{day.a}")
    await page.press("#filter-member", "Enter")
    await expect(page).to_have_url(re.compile(f"member={day.a}"))
    assert set(await queue_names(page, expect)) == {day.late.name, day.restriction.name}
    await page.reload()  # the filters live in the address
    await expect(page.locator("#filter-member")).to_have_value(day.a)
    assert set(await queue_names(page, expect)) == {day.late.name, day.restriction.name}
    await page.click("#filter-clear")
    await expect(page.locator("#queue-count")).not_to_contain_text("matching")


async def open_request(page: Any, expect: Any, name: str, member: str) -> None:
    """Finds the request as an officer would, by its member, and opens it."""
    await page.fill("#filter-member", member)
    await page.press("#filter-member", "Enter")
    assert name in await queue_names(page, expect)
    await page.click(f'#queue tr[data-name="{name}"]')
    await expect(page.locator("#detail-title")).to_contain_text(name.removeprefix("dataRequests/"))


async def extend_a_deadline(suite: Suite, page: Any, expect: Any, day: Day) -> None:
    await open_request(page, expect, day.late.name, day.a)
    received = day.late.create_time.ToDatetime().replace(tzinfo=ZoneInfo("UTC"))
    shown = received.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") + " UTC+8"
    fields = page.locator("#detail-fields")
    await expect(fields).to_contain_text(shown)
    await expect(fields).to_contain_text("(Beijing date")
    message = page.locator("#message")
    await page.fill("#extend-days", "5")
    await page.click("#extend-btn")
    await expect(message).to_have_class("error")
    await expect(message).to_contain_text("reason is required")
    await page.fill("#extend-reason", "The records are archived off site.")
    await page.click("#extend-btn")
    await expect(message).to_contain_text("extended by 5 working day(s)")
    after = await get_request(suite, day.late.name)
    assert after.working_days == day.late.working_days + 5
    due = f"{after.due_date.year}-{after.due_date.month:02}-{after.due_date.day:02}"
    await expect(message).to_contain_text(f"now due {due} (Beijing date)")
    await expect(fields).to_contain_text(f"{due} (Beijing date")
    last = page.locator("#timeline li").last
    await expect(last).to_contain_text("Deadline extended")
    await expect(last.locator(".raw")).to_have_text("deadline.extended")
    await expect(last.locator(".actor")).to_contain_text(KEY_NAME)  # not the key's id
    await expect(last).to_contain_text("The records are archived off site.")
    assert BEIJING_MINUTE.search(await last.inner_text())
    await expect(fields.locator(".actor")).to_contain_text(KEY_NAME)  # the extension's


async def cancel_for_the_member(suite: Suite, page: Any, expect: Any, day: Day) -> None:
    await open_request(page, expect, day.to_cancel, day.c)
    message = page.locator("#message")
    await page.click("#cancel-btn")
    await expect(message).to_have_class("error")
    await expect(message).to_contain_text("Confirm that the member asked")
    await page.check("#cancel-confirm")
    await page.click("#cancel-btn")
    await expect(message).to_contain_text("is now cancelled")
    assert (await get_request(suite, day.to_cancel)).state == pb.DATA_REQUEST_STATE_CANCELLED
    await expect(page.locator("#cancel-btn")).to_be_disabled()
    await expect(page.locator("#extend-btn")).to_be_disabled()
    await expect(page.locator("#export-box")).to_be_hidden()  # nothing to download here
    last = page.locator("#timeline li").last
    await expect(last).to_contain_text("Cancelled")
    await expect(last.locator(".actor")).to_contain_text(KEY_NAME)


async def decide_a_stopped_correction(
    suite: Suite, page: Any, expect: Any, day: Day, tmp_path: Path
) -> None:
    """Approving runs the correction at once; accounts refuses the phone (another member's),
    so fulfilment stops and says so, in the detail and in the queue. The officer approves
    again (the cause is still there: it stops again), then rejects; the first reject call's
    answer is lost on the way back, and the console's retry replays it."""
    await open_request(page, expect, day.to_stop, day.e)
    message = page.locator("#message")
    approve = page.locator("#approve-btn")
    await expect(approve).to_have_text("Approve and fulfil")
    await approve.click()
    await expect(message).to_contain_text("stopped at “Correct the profile in accounts”")
    await expect(message).to_contain_text("another member's")
    await expect(message).to_contain_text("needs a decision")
    progress = page.locator("#progress")
    await expect(progress).to_have_class(re.compile(r"\bstopped\b"))
    await expect(page.locator("#progress-text")).to_contain_text("waiting for an officer")
    stop = page.locator("#stop-box")
    await expect(stop).to_be_visible()
    await expect(stop.locator("#stop-title")).to_contain_text("Stopped — needs a decision")
    await expect(stop).to_contain_text("Correct the profile in accounts")
    await expect(stop).to_contain_text("accounts service")
    await expect(stop).to_contain_text("the new phone number is already another member's")
    await expect(stop.locator('[data-code="ALREADY_EXISTS PHONE_TAKEN"]')).to_be_visible()
    await expect(stop).to_contain_text("no: a refusal")
    await expect(stop.locator("#stop-hint")).to_contain_text("Approve it again once the cause")
    assert BEIJING_MINUTE.search(await stop.inner_text())
    await expect(page.locator('#steps li[data-step="accounts.update"]')).to_have_class("stopped")
    # the failure was not retried: the timeline does not say it will be
    failed = page.locator('#timeline li[data-action="step.accounts.update.failed"]')
    await expect(failed).to_have_count(1)
    await expect(failed).to_contain_text("Step failed: Correct the profile in accounts")
    await expect(failed).not_to_contain_text("will be retried")
    await expect(page.locator("#timeline li").last).to_contain_text("Fulfilment stopped")
    # the queue marks it: it waits for a decision
    row = page.locator(f'#queue tr[data-name="{day.to_stop}"]')
    await expect(row.locator(".badge.stopped")).to_have_text("stopped — needs a decision")
    await expect(row).to_have_class(re.compile(r"\bstopped\b"))
    # the decisions offered: approve again, reject; no cancelling once fulfilment started
    await expect(approve).to_have_text("Approve again")
    await expect(approve).to_be_enabled()
    await expect(page.locator("#reject-btn")).to_be_enabled()
    await expect(page.locator("#cancel-btn")).to_be_disabled()
    await page.screenshot(path=str(tmp_path / "console-stopped.png"), full_page=True)

    await approve.click()  # the number is still taken: it stops again, and says so again
    await expect(page.locator("#timeline li[data-action=resumed]")).to_have_count(1)
    await expect(page.locator('#timeline li[data-action="fulfilment.stopped"]')).to_have_count(2)
    await expect(message).to_contain_text("needs a decision")
    await expect(approve).to_be_enabled()

    sent: list[dict[str, Any]] = []

    async def answer_lost_once(route: Any) -> None:
        sent.append(json.loads(route.request.post_data or "{}"))
        response = await route.fetch()  # the service does it...
        if len(sent) == 1:
            await route.abort("connectionreset")  # ...and the answer never comes back
        else:
            await route.fulfill(response=response)

    path = f"**/console/api/v1/{day.to_stop}:reject"
    await page.route(path, answer_lost_once)
    await page.fill("#reject-reason", "The phone number belongs to another member.")
    await page.click("#reject-btn")
    await expect(message).to_contain_text("is now rejected")
    await expect(message).not_to_have_class("error")
    await page.unroute(path, answer_lost_once)
    assert len(sent) == 2 and sent[0] == sent[1] and sent[0]["requestId"], sent
    after = await get_request(suite, day.to_stop)
    assert after.state == pb.DATA_REQUEST_STATE_REJECTED
    assert [e.action for e in after.events].count("rejected") == 1
    assert after.step_failure.reason == "PHONE_TAKEN"  # kept, as the cause
    await expect(page.locator("#timeline li[data-action=rejected]")).to_have_count(1)
    await expect(stop.locator("#stop-title")).to_contain_text("before the request was rejected")
    await expect(stop.locator("#stop-hint")).to_be_hidden()
    await expect(approve).to_be_disabled()
    await expect(page.locator("#reject-btn")).to_be_disabled()
    await expect(row.locator(".badge.stopped")).to_have_count(0)  # decided
    await expect(row.locator("td").nth(2)).to_have_text("rejected")


async def read_the_steps(page: Any, expect: Any, day: Day) -> None:
    # as if the step had failed once (a service down) before it was done: no stop followed
    async def failed_once(route: Any) -> None:
        response = await route.fetch()
        request = await response.json()
        events = request["events"]
        done = next(i for i, e in enumerate(events) if e["action"] == "step.processing.pause")
        failure = {**events[done], "action": "step.processing.pause.failed"}
        request["events"] = [*events[:done], failure, *events[done:]]
        await route.fulfill(response=response, json=request)

    path = f"**/console/api/v1/{day.done}"
    await page.route(path, failed_once)
    await open_request(page, expect, day.done, day.d)
    retried = page.locator('#timeline li[data-action="step.processing.pause.failed"]')
    await expect(retried).to_contain_text("Step failed, will be retried: Pause processing")
    await page.unroute(path, failed_once)
    await expect(page.locator("#stop-box")).to_be_hidden()
    step = page.locator("#steps li").first
    await expect(step).to_contain_text("Pause processing in points")
    await expect(step.locator(".coded")).to_have_attribute("title", "processing.pause")
    await expect(step.locator(".raw")).to_have_text("processing.pause")
    timeline = page.locator("#timeline")
    await expect(timeline).to_contain_text("Step done: Pause processing in points")
    await expect(timeline).to_contain_text("privacy service")  # a service identity
    await expect(timeline).to_contain_text("officer-1")  # a subject no key has stays as it is


async def browse_the_audit_events(page: Any, expect: Any, day: Day) -> None:
    await open_request(page, expect, day.to_cancel, day.c)
    await page.click("#member-audit")
    await expect(page.locator("#audit-subject")).to_have_value(day.c)
    await page.fill("#audit-action", "data_request.")
    await page.click("#audit-filters button[type=submit]")
    rows = page.locator("#audit-events tbody tr")
    await expect(rows).to_have_count(2)
    await expect(page).to_have_url(re.compile(f"auditSubject={day.c}.*auditAction=data_request"))
    await expect(rows.nth(0)).to_have_attribute("data-action", "data_request.created")
    cancelled = rows.nth(1)
    await expect(cancelled).to_have_attribute("data-action", "data_request.cancelled")
    await expect(cancelled).to_contain_text("Data request: cancelled")
    await expect(cancelled.locator(".actor")).to_contain_text(KEY_NAME)
    time_cell = await cancelled.locator("td").nth(1).inner_text()
    assert BEIJING_SECOND.match(time_cell.strip()), time_cell
    # a value in the table becomes the filter: every event of that actor
    await cancelled.locator("td").nth(3).locator("button").click()
    await expect(page.locator("#audit-actor")).to_have_value(re.compile(r"^key:[a-z2-7]{16}$"))
    await expect(rows).to_have_count(1)
