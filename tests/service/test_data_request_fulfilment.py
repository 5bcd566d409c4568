"""Fulfilment of data-subject requests through the real services: CORRECTION, EXPLANATION,
RESTRICTION and CONSENT_WITHDRAWAL do what they ask in accounts, points and privacy; the
exports of ACCESS and PORTABILITY download in parts a limited number of times and are purged
when they expire. (DELETION: test_data_request_erasure.py.)"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as ppb
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import data_rights_pb2 as pb

from services.privacy.domain import exports
from services.privacy.server import PrivacyComponent
from tests.service.test_consent_enforcement import eventually
from tests.service.test_points_settlement import payment, settler
from tests.support.accounts import next_phone, register
from tests.support.consent import grant_request
from tests.support.data_rights import (
    approve,
    create,
    download,
    fulfilled,
    get_request,
    member_with_ledger,
    officer,
    verify,
    wallet,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

SHANGHAI = ZoneInfo("Asia/Shanghai")
COMPLETED = pb.DATA_REQUEST_STATE_COMPLETED
IN_PROGRESS = pb.DATA_REQUEST_STATE_IN_PROGRESS
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def parts(suite: Suite) -> PrivacyComponent:
    return cast(PrivacyComponent, suite.privacy_service.component)


@pytest.fixture
def clock(suite: Suite, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[datetime]]:
    """The privacy service's clock, set by the test (a one-element list). Exports took the
    clock function when it was made, so it is set there too."""
    now = [datetime.now(SHANGHAI)]
    data_rights = parts(suite)
    monkeypatch.setattr(data_rights.data_requests, "clock", lambda: now[0])
    monkeypatch.setattr(data_rights.exports, "_clock", lambda: now[0])
    yield now


async def full_member(suite: Suite, member_id: str) -> apb.Member:
    got: apb.Member = await suite.accounts.GetMember(
        apb.GetMemberRequest(
            name=f"members/{member_id}", view=apb.MEMBER_VIEW_FULL, purpose="check a correction"
        ),
        metadata=suite.auth("officer", "officer-1"),
    )
    return got


def steps_of(request: pb.DataRequest) -> dict[str, pb.FulfilmentStep]:
    return {s.step: s for s in request.steps}


# --- CORRECTION ------------------------------------------------------------------------------


async def test_a_correction_changes_the_member_and_never_shows_the_values(
    suite: Suite, db: asyncpg.Connection
) -> None:
    phone = next_phone()
    member = await register(suite, phone, email="old@example.com", display_name="Old Name")
    correction = pb.Correction(email="new@example.com", display_name="New Name")
    created = await create(
        suite, member.member_id, pb.DATA_REQUEST_TYPE_CORRECTION, correction=correction
    )
    assert created.correction == pb.Correction(email="***", display_name="***")
    await verify(suite, created.name)
    done = await approve(suite, created.name)
    assert done.state == COMPLETED, done
    assert steps_of(done)["accounts.update"].HasField("done_time")

    got = await full_member(suite, member.member_id)
    assert (got.email, got.display_name) == ("new@example.com", "New Name")
    assert got.phone == f"+86{phone}"  # unchanged

    # reads show which fields, never the values
    read = await get_request(suite, done.name)
    assert read.correction == pb.Correction(email="***", display_name="***")
    listed = await suite.data_rights.ListDataRequests(
        pb.ListDataRequestsRequest(member=f"members/{member.member_id}"), metadata=officer(suite)
    )
    for message in (done, read, listed):
        text = str(message)
        assert "new@example.com" not in text and "New Name" not in text

    # the stored request holds them encrypted only: not in the ciphertext, nor anywhere else
    row = await db.fetchrow(
        "SELECT correction_ciphertext, correction_fields FROM privacy.data_requests WHERE id = $1",
        done.name.removeprefix("dataRequests/"),
    )
    assert row is not None
    ciphertext = bytes(row["correction_ciphertext"])
    assert ciphertext and sorted(row["correction_fields"]) == ["display_name", "email"]
    for value in (b"new@example.com", b"New Name"):
        assert value not in ciphertext and value.hex().encode() not in ciphertext
    stored = await db.fetchval(
        "SELECT string_agg(r::text, '') FROM ("
        " SELECT d::text FROM privacy.data_requests d UNION ALL"
        " SELECT e::text FROM privacy.data_request_events e UNION ALL"
        " SELECT a::text FROM privacy.audit_log a) AS r"
    )
    for text in ("new@example.com", "New Name"):
        assert text not in stored and text.encode().hex() not in stored


async def test_a_correction_to_a_phone_taken_stops_for_the_officer_to_reject(
    suite: Suite, db: asyncpg.Connection
) -> None:
    taken, own = next_phone(), next_phone()
    await register(suite, taken)
    member = await register(suite, own)
    created = await create(
        suite,
        member.member_id,
        pb.DATA_REQUEST_TYPE_CORRECTION,
        correction=pb.Correction(phone=taken),
    )
    await verify(suite, created.name)
    stopped = await approve(suite, created.name)
    assert stopped.state == IN_PROGRESS, stopped
    step = steps_of(stopped)["accounts.update"]
    assert "ALREADY_EXISTS" in step.last_error and not step.HasField("done_time")
    assert taken not in str(stopped)
    # the answer says it stopped, and why (test_data_request_corrections.py: more cases)
    assert (stopped.step_failure.code, stopped.step_failure.reason) == (
        "ALREADY_EXISTS",
        "PHONE_TAKEN",
    )

    # a refusal is not retried: nothing is scheduled, the resumer leaves it alone
    request_id = created.name.removeprefix("dataRequests/")
    row = await db.fetchrow(
        "SELECT next_attempt_at, attempts FROM privacy.data_requests WHERE id = $1", request_id
    )
    assert row is not None and (row["next_attempt_at"], row["attempts"]) == (None, 1)
    assert await parts(suite).fulfiller.resume_due() == 0
    assert (await get_request(suite, created.name)).state == IN_PROGRESS

    reason = "the phone number belongs to another member"
    rejected = await suite.data_rights.RejectDataRequest(
        pb.RejectDataRequestRequest(name=created.name, reason=reason), metadata=officer(suite)
    )
    assert rejected.state == pb.DATA_REQUEST_STATE_REJECTED
    assert rejected.rejection_reason == reason
    assert (await full_member(suite, member.member_id)).phone == f"+86{own}"


# --- EXPLANATION -------------------------------------------------------------------------------


async def test_an_explanation_gives_the_rules_and_each_transaction(suite: Suite) -> None:
    member_id = await member_with_ledger(suite, payments=2)
    listed = await suite.points.ListTransactions(
        ppb.ListTransactionsRequest(parent=f"members/{member_id}"), metadata=officer(suite)
    )
    names = [t.name for t in listed.transactions]
    assert len(names) >= 2
    unknown = f"members/{member_id}/transactions/999999999999"
    done = await fulfilled(
        suite, member_id, pb.DATA_REQUEST_TYPE_EXPLANATION, transactions=[*names, unknown]
    )
    assert done.state == COMPLETED, done

    rules = json.loads(done.explanation.rules_json)
    assert rules["member"] == f"members/{member_id}"
    assert rules["earning"]["currencies"] and "capPerPayment" in rules["earning"]
    assert "tiers" in rules and "refunds" in rules

    explained = [json.loads(e) for e in done.explanation.transaction_explanations_json]
    assert [e["name"] for e in explained] == [*names, unknown]
    for entry, transaction in zip(explained, listed.transactions, strict=False):
        assert entry["kind"] == transaction.kind and "error" not in entry
        assert entry["steps"] or entry["sentence"]
    assert explained[-1] == {"name": unknown, "error": "NOT_FOUND"}
    # the same again on a read
    assert (await get_request(suite, done.name)).explanation == done.explanation


# --- RESTRICTION and CONSENT_WITHDRAWAL ---------------------------------------------------------


async def test_a_restriction_pauses_settling_the_members_payments(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await member_with_ledger(suite, payments=1)
    done = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_RESTRICTION)
    assert done.state == COMPLETED, done
    assert steps_of(done)["processing.pause"].HasField("done_time")
    await eventually(suite, member_id, "PROCESSING_RESTRICTED", "restricted")
    await expect_error(
        suite.points.SettlePayment(
            payment(member_id, "after-restriction"), metadata=settler(suite)
        ),
        FAILED_PRECONDITION,
        reason="PROCESSING_RESTRICTED",
    )
    pauses = await db.fetch(
        "SELECT cause, paused FROM privacy.outbox WHERE member_id = $1 ORDER BY event_id",
        member_id,
    )
    assert [tuple(r) for r in pauses] == [("RESTRICTION_REQUESTED", True)]


async def test_a_consent_withdrawal_withdraws_and_pauses_payment_records(suite: Suite) -> None:
    member = await register(suite)
    name = f"members/{member.member_id}"
    await suite.consent.GrantConsent(
        grant_request(name, "marketing", "payment_records", request_id="g-1"),
        metadata=wallet(suite),
    )
    await eventually(suite, member.member_id, "OK", "granted")  # points knows, not paused
    done = await fulfilled(
        suite,
        member.member_id,
        pb.DATA_REQUEST_TYPE_CONSENT_WITHDRAWAL,
        purposes=["marketing", "payment_records"],
    )
    assert done.state == COMPLETED, done
    consents = await suite.consent.GetConsents(
        cpb.GetConsentsRequest(member=name), metadata=wallet(suite)
    )
    status = {c.purpose: c.status for c in consents.consents}
    assert status["marketing"] == cpb.CONSENT_STATUS_WITHDRAWN
    assert status["payment_records"] == cpb.CONSENT_STATUS_WITHDRAWN
    await eventually(suite, member.member_id, "PROCESSING_RESTRICTED", "withdrawn")


# --- exports -----------------------------------------------------------------------------------


def export_request(name: str, page_token: str = "") -> pb.DownloadExportRequest:
    return pb.DownloadExportRequest(name=f"{name}/export", page_token=page_token)


async def test_an_export_downloads_three_times_each_audited(
    suite: Suite, db: asyncpg.Connection, clock: list[datetime]
) -> None:
    member_id = await member_with_ledger(suite, payments=1, email="three@example.com")
    done = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_ACCESS)
    for left in (2, 1, 0):
        files = await download(suite, done.name)
        assert "three@example.com" in files["bundle.json"].decode()
        assert (await get_request(suite, done.name)).export.downloads_remaining == left
    await expect_error(
        suite.data_rights.DownloadExport(export_request(done.name), metadata=wallet(suite)),
        FAILED_PRECONDITION,
        reason="DOWNLOAD_LIMIT_REACHED",
    )
    audited = await db.fetch(
        "SELECT actor, actor_role, subject_id FROM privacy.audit_log"
        " WHERE action = 'export.downloaded' AND request_id = $1 ORDER BY seq",
        done.name,
    )
    assert [tuple(r) for r in audited] == [("wallet-app", "wallet-backend", member_id)] * 3
    # the last download's window closes, and the bundle with it
    clock[0] += exports.DOWNLOAD_WINDOW + timedelta(seconds=1)
    await parts(suite).exports.purge_expired()
    await expect_error(
        suite.data_rights.DownloadExport(export_request(done.name), metadata=wallet(suite)),
        FAILED_PRECONDITION,
        reason="EXPORT_PURGED",
    )


async def test_a_download_comes_in_parts_that_join_to_the_archive(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "PART_BYTES", 256)
    member_id = await member_with_ledger(suite, payments=2)
    done = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_ACCESS)
    received: list[pb.Export] = []
    token = ""
    while True:
        part = await suite.data_rights.DownloadExport(
            export_request(done.name, token), metadata=wallet(suite)
        )
        assert part.offset == sum(len(p.archive_part) for p in received)
        assert 0 < len(part.archive_part) <= 256
        received.append(part)
        token = part.next_page_token
        if not token:
            break
    assert len(received) >= 3
    archive = b"".join(p.archive_part for p in received)
    first = received[0]
    assert len(archive) == first.archive_size_bytes == done.export.size_bytes
    assert hashlib.sha256(archive).digest() == first.archive_sha256
    with zipfile.ZipFile(io.BytesIO(archive)) as unpacked:
        assert sorted(unpacked.namelist()) == ["bundle.json", "ledger.csv"]
        json.loads(unpacked.read("bundle.json"))
    # one download, however many parts
    assert {p.downloads_remaining for p in received} == {2}
    assert (await get_request(suite, done.name)).export.downloads_remaining == 2


async def test_an_expired_export_is_purged(
    suite: Suite, db: asyncpg.Connection, clock: list[datetime]
) -> None:
    member_id = await member_with_ledger(suite, payments=1)
    done = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_ACCESS)
    assert done.export.expire_time.ToDatetime().timestamp() == pytest.approx(
        (clock[0] + exports.EXPORT_TTL).timestamp(), abs=1
    )
    request_id = done.name.removeprefix("dataRequests/")
    clock[0] += exports.EXPORT_TTL - timedelta(seconds=1)
    await parts(suite).exports.purge_expired()
    assert await db.fetchval(
        "SELECT archive_ciphertext IS NOT NULL FROM privacy.data_exports"
        " WHERE data_request_id = $1",
        request_id,
    )
    clock[0] += timedelta(seconds=2)
    await parts(suite).exports.purge_expired()
    row = await db.fetchrow(
        "SELECT archive_ciphertext, purged_at FROM privacy.data_exports WHERE data_request_id = $1",
        request_id,
    )
    assert row is not None
    assert row["archive_ciphertext"] is None and row["purged_at"] is not None
    await expect_error(
        suite.data_rights.DownloadExport(export_request(done.name), metadata=wallet(suite)),
        FAILED_PRECONDITION,
        reason="EXPORT_PURGED",
    )
    assert (await get_request(suite, done.name)).export.purged
    purged = await db.fetchval(
        "SELECT count(*) FROM privacy.audit_log WHERE action = 'export.purged' AND request_id = $1",
        done.name,
    )
    assert purged == 1


async def test_a_portability_bundle_describes_its_schema(suite: Suite) -> None:
    member_id = await member_with_ledger(suite, payments=1)
    portable = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_PORTABILITY)
    access = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_ACCESS)
    bundle = json.loads((await download(suite, portable.name))["bundle.json"])
    schema = bundle["schema"]
    assert schema["messages"]["member.profile"] == "membership.accounts.v1.Member"
    assert schema["messages"]["dataRequests[]"] == "membership.privacy.v1.DataRequest"
    assert bundle["request"]["type"] == "DATA_REQUEST_TYPE_PORTABILITY"
    assert "schema" not in json.loads((await download(suite, access.name))["bundle.json"])
