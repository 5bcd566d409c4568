"""DELETION requests hold (the issue's acceptance tests): the member's ciphertext is shredded
with their data key, a dump of the database holds none of their personal information, the
points ledger still reconciles, the phone registers again, and a deletion interrupted by
accounts being down or by a privacy restart completes once they are back."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as ppb
from membership.privacy.v1 import data_rights_pb2 as pb

from services.accounts.server import SPEC as ACCOUNTS
from services.privacy.server import SPEC as PRIVACY
from services.runtime.server import start_service
from tests.service.test_member_relay import wait_for_state
from tests.support.accounts import next_phone, register
from tests.support.consent import known_member
from tests.support.data_rights import (
    approve,
    create,
    fulfilled,
    get_request,
    member_with_ledger,
    officer,
    pg_dump,
    verify,
)
from tests.support.privacy import decrypt
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

DELETION = pb.DATA_REQUEST_TYPE_DELETION
COMPLETED = pb.DATA_REQUEST_STATE_COMPLETED
IN_PROGRESS = pb.DATA_REQUEST_STATE_IN_PROGRESS
ENCRYPTED_COLUMNS = ("phone", "email", "display_name")
RESUME_WAIT_S = 30.0


@pytest.fixture
async def restartable(suite: Suite) -> AsyncIterator[Suite]:
    """The suite, whose accounts and privacy services the test may replace: the suite stops
    the ones it started, this the replacements."""
    started = (suite.accounts_service, suite.privacy_service)
    yield suite
    for running in (suite.accounts_service, suite.privacy_service):
        if all(running is not original for original in started):
            await running.stop(0.2)


async def stored_ciphertexts(db: asyncpg.Connection, member_id: str) -> dict[str, bytes]:
    row = await db.fetchrow(
        "SELECT phone_ct, email_ct, display_name_ct FROM accounts.members WHERE member_id = $1",
        member_id,
    )
    assert row is not None
    return {c: bytes(row[f"{c}_ct"]) for c in ENCRYPTED_COLUMNS if row[f"{c}_ct"] is not None}


async def expect_shredded(suite: Suite, member_id: str, ciphertexts: dict[str, bytes]) -> None:
    for column, ciphertext in ciphertexts.items():
        await expect_error(
            decrypt(suite, member_id, [(column, ciphertext)]),
            grpc.StatusCode.FAILED_PRECONDITION,
            reason="SUBJECT_KEY_DESTROYED",
        )


def encodings(value: str) -> list[str]:
    """The forms a value could take in a dump: as is, UTF-8 hex (bytea), JSON with escaped
    non-ASCII, base64 of its UTF-8."""
    raw = value.encode()
    return [
        value,
        raw.hex(),
        json.dumps(value)[1:-1],
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


async def test_deletion_shreds_the_member_and_their_personal_information_is_gone(
    suite: Suite, db: asyncpg.Connection
) -> None:
    national = next_phone()
    e164 = f"+86{national}"
    email = "qian.duoduo@erasure.example.net"
    name = "钱多多 Qian Duoduo"
    member_id = await member_with_ledger(
        suite, payments=2, phone=national, email=email, display_name=name
    )
    masked = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=f"members/{member_id}"), metadata=officer(suite)
    )
    # an export of the member left behind, and a correction carrying new values
    access = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_ACCESS)
    pending = await create(
        suite,
        member_id,
        pb.DATA_REQUEST_TYPE_CORRECTION,
        correction=pb.Correction(email="qian.new@erasure.example.net"),
    )
    ciphertexts = await stored_ciphertexts(db, member_id)
    assert set(ciphertexts) == set(ENCRYPTED_COLUMNS)
    # what the dump is searched for is found before the deletion (the masked forms)
    before = (await pg_dump(suite.dsn)).lower()
    assert all(v.lower() in before for v in (masked.phone, masked.email, masked.display_name))
    assert await decrypt(suite, member_id, [("phone", ciphertexts["phone"])]) == [e164.encode()]

    done = await fulfilled(suite, member_id, DELETION)
    assert done.state == COMPLETED, done
    assert done.deletion_outcome == pb.DELETION_OUTCOME_RETAINED_RESTRICTED
    await expect_shredded(suite, member_id, ciphertexts)
    assert await db.fetchval(
        "SELECT archive_ciphertext IS NULL AND purged_at IS NOT NULL FROM privacy.data_exports"
        " WHERE data_request_id = $1",
        access.name.removeprefix("dataRequests/"),
    )
    assert (
        await db.fetchval("SELECT status FROM accounts.members WHERE member_id = $1", member_id)
        == "ERASED"
    )

    dump = await pg_dump(suite.dsn)
    assert "accounts.members" in dump and member_id in dump  # the dump is the real one
    values = [e164, e164.removeprefix("+"), national, email, "qian.new@erasure.example.net"]
    values += [name, *name.split(" "), masked.phone, masked.email, masked.display_name]
    needles = {n.lower() for v in values if v for n in encodings(v)}
    lowered = dump.lower()
    assert sorted(n for n in needles if n in lowered) == []
    assert pending.name  # its correction's ciphertext is shredded with the key, not deleted

    # the ledger is kept, restricted, and still balances
    reconciled = await suite.points.Reconcile(ppb.ReconcileRequest(), metadata=suite.auth("admin"))
    assert reconciled.ok and reconciled.total_violations == 0, reconciled
    one = await suite.points.Reconcile(
        ppb.ReconcileRequest(member=f"members/{member_id}"), metadata=suite.auth("admin")
    )
    assert one.ok and one.checked.members == 1 and one.checked.transactions >= 2

    # the person can come back as a new member
    again = await register(suite, national, email=email, display_name=name)
    assert again.member_id != member_id


async def test_a_member_without_a_ledger_is_erased_outright(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await register(suite)
    await wait_for_state(db, member.member_id, "ACTIVE")  # points knows them, no payment
    done = await fulfilled(suite, member.member_id, DELETION)
    assert done.state == COMPLETED, done
    assert done.deletion_outcome == pb.DELETION_OUTCOME_ERASED


async def test_a_member_points_never_knew_is_erased_outright(suite: Suite) -> None:
    # privacy holds a data key for them; neither accounts nor points ever heard of them
    member_id = (await known_member(suite, "mneverinpoints")).removeprefix("members/")
    done = await fulfilled(suite, member_id, DELETION)
    assert done.state == COMPLETED, done
    assert done.deletion_outcome == pb.DELETION_OUTCOME_ERASED


def steps_of(request: pb.DataRequest) -> dict[str, pb.FulfilmentStep]:
    return {s.step: s for s in request.steps}


def assert_stopped_at_accounts(request: pb.DataRequest) -> None:
    assert request.state == IN_PROGRESS, request
    steps = steps_of(request)
    assert steps["subject_key.destroy"].HasField("done_time")
    erase = steps["accounts.erase"]
    assert not erase.HasField("done_time")
    assert erase.last_error in ("accounts: UNAVAILABLE", "accounts: DEADLINE_EXCEEDED"), erase
    assert not steps["points.restrict"].HasField("done_time")


def assert_completed(request: pb.DataRequest) -> None:
    assert request.state == COMPLETED, request
    assert all(s.HasField("done_time") for s in request.steps), request.steps
    assert request.deletion_outcome == pb.DELETION_OUTCOME_RETAINED_RESTRICTED
    assert "step.accounts.erase.failed" in [e.action for e in request.events]


async def test_a_deletion_interrupted_by_accounts_resumes_on_a_repeated_approval(
    restartable: Suite, db: asyncpg.Connection
) -> None:
    suite = restartable
    member_id = await member_with_ledger(suite, payments=1)
    ciphertexts = await stored_ciphertexts(db, member_id)
    created = await create(suite, member_id, DELETION)
    await verify(suite, created.name)
    port = suite.accounts_service.port
    await suite.accounts_service.stop(0)

    key = "approve-interrupted"
    stopped = await approve(suite, created.name, key)
    assert_stopped_at_accounts(stopped)
    # the key went first: the member's ciphertext is unreadable while accounts is away
    await expect_shredded(suite, member_id, ciphertexts)

    suite.accounts_service = await start_service(ACCOUNTS, suite.settings, f"127.0.0.1:{port}")
    # privacy's channel to accounts reconnects within its own backoff
    deadline = time.monotonic() + 15
    resumed = await approve(suite, created.name, key)
    while resumed.state != COMPLETED and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        resumed = await approve(suite, created.name, key)
    assert_completed(resumed)
    got = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=f"members/{member_id}"), metadata=officer(suite)
    )
    assert got.status == apb.MEMBER_STATUS_ERASED


async def test_a_deletion_completes_after_a_privacy_restart_without_another_call(
    restartable: Suite,
) -> None:
    suite = restartable
    member_id = await member_with_ledger(suite, payments=1)
    created = await create(suite, member_id, DELETION)
    await verify(suite, created.name)
    accounts_port = suite.accounts_service.port
    await suite.accounts_service.stop(0)
    assert_stopped_at_accounts(await approve(suite, created.name))

    privacy_port = suite.privacy_service.port
    await suite.privacy_service.stop(0)
    suite.privacy_service = await start_service(
        PRIVACY, suite.settings, f"127.0.0.1:{privacy_port}"
    )
    suite.accounts_service = await start_service(
        ACCOUNTS, suite.settings, f"127.0.0.1:{accounts_port}"
    )
    # the new privacy service's resumer finds the request due and finishes it
    deadline = time.monotonic() + RESUME_WAIT_S
    request = await get_request(suite, created.name)
    while request.state != COMPLETED and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        request = await get_request(suite, created.name)
    assert_completed(request)
