"""CORRECTION requests (issue 12): accounts checks the values at creation with the rules of
any update (UpdateMember, validate_only), and a fulfilment whose step is refused says so on
the request (step_failure, the timeline) instead of sitting IN_PROGRESS looking fine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import cast

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from membership.accounts.v1 import accounts_pb2 as apb
from membership.privacy.v1 import consent_pb2
from membership.privacy.v1 import data_rights_pb2 as pb

from services.accounts.server import SPEC as ACCOUNTS
from services.privacy.data_requests import DataRequests
from services.privacy.server import PrivacyComponent
from services.runtime.server import start_service
from tests.support.accounts import next_phone, register, table_counts
from tests.support.data_rights import approve, create, get_request, officer, verify, wallet
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

CORRECTION = pb.DATA_REQUEST_TYPE_CORRECTION
IN_PROGRESS = pb.DATA_REQUEST_STATE_IN_PROGRESS
INVALID = grpc.StatusCode.INVALID_ARGUMENT
RECONNECT_S = 15.0


def rights(suite: Suite) -> DataRequests:
    return cast(PrivacyComponent, suite.privacy_service.component).data_requests


def create_request(
    member_id: str, correction: pb.Correction, key: str
) -> pb.CreateDataRequestRequest:
    return pb.CreateDataRequestRequest(
        data_request=pb.DataRequest(
            member=f"members/{member_id}",
            type=CORRECTION,
            channel=consent_pb2.CHANNEL_APP,
            correction=correction,
        ),
        request_id=key,
    )


async def stored_requests(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM privacy.data_requests"))


@pytest.mark.parametrize(
    ("correction", "fields"),
    [
        (pb.Correction(phone="12"), {"data_request.correction.phone"}),
        (
            # a landline: valid as a number, but accounts takes mainland mobile numbers only
            pb.Correction(phone="010 6552 9988", email="not-an-email"),
            {"data_request.correction.phone", "data_request.correction.email"},
        ),
        # within privacy's own bound (200), beyond accounts' rule (64)
        (pb.Correction(display_name="n" * 65), {"data_request.correction.display_name"}),
    ],
)
async def test_values_accounts_would_refuse_are_refused_at_creation(
    suite: Suite, db: asyncpg.Connection, correction: pb.Correction, fields: set[str]
) -> None:
    member = await register(suite)
    accounts_before = await table_counts(suite.dsn)
    err = await expect_error(
        suite.data_rights.CreateDataRequest(
            create_request(member.member_id, correction, "dsr-invalid"), metadata=wallet(suite)
        ),
        INVALID,
        fields=fields,
    )
    # the rule is named, never the value
    text = err.message + repr(err.violations)
    for value in (correction.phone, correction.email, correction.display_name):
        assert not value or value not in text, err.describe()
    assert await stored_requests(db) == 0
    # accounts' check wrote nothing and recorded no key
    assert await table_counts(suite.dsn) == accounts_before


async def test_a_valid_correction_is_checked_without_changing_the_member(suite: Suite) -> None:
    phone = next_phone()
    member = await register(suite, phone, display_name="Old Name")
    accounts_before = await table_counts(suite.dsn)
    created = await create(
        suite, member.member_id, CORRECTION, correction=pb.Correction(display_name="New Name")
    )
    assert created.state == pb.DATA_REQUEST_STATE_RECEIVED
    assert await table_counts(suite.dsn) == accounts_before
    got = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=member.name), metadata=officer(suite)
    )
    assert got.display_name == "O****"  # still "Old Name": the check changed nothing


@pytest.fixture
async def restartable(suite: Suite) -> AsyncIterator[Suite]:
    """The suite, whose accounts service the test may replace (this stops the replacement)."""
    started = suite.accounts_service
    yield suite
    if suite.accounts_service is not started:
        await suite.accounts_service.stop(0.2)


async def test_accounts_out_of_reach_at_creation_is_unavailable_and_retryable(
    restartable: Suite, db: asyncpg.Connection
) -> None:
    suite = restartable
    member = await register(suite)
    port = suite.accounts_service.port
    await suite.accounts_service.stop(0)
    request = create_request(member.member_id, pb.Correction(email="new@example.com"), "dsr-down")
    await expect_error(
        suite.data_rights.CreateDataRequest(request, metadata=wallet(suite)),
        grpc.StatusCode.UNAVAILABLE,
        reason="ACCOUNTS_UNAVAILABLE",
    )
    assert await stored_requests(db) == 0

    suite.accounts_service = await start_service(ACCOUNTS, suite.settings, f"127.0.0.1:{port}")
    # the same request again, once privacy's channel reconnected
    deadline = time.monotonic() + RECONNECT_S
    while True:
        try:
            created = await suite.data_rights.CreateDataRequest(request, metadata=wallet(suite))
            break
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert created.state == pb.DATA_REQUEST_STATE_RECEIVED
    assert await stored_requests(db) == 1


def assert_stopped(
    request: pb.DataRequest, code: str, reason: str, fields: Sequence[str] = ()
) -> None:
    """IN_PROGRESS, the step not done, and the request saying why it waits."""
    assert request.state == IN_PROGRESS, request
    assert request.HasField("step_failure"), request
    failure = request.step_failure
    assert (failure.step, failure.service, failure.code, failure.reason) == (
        "accounts.update",
        "accounts",
        code,
        reason,
    ), failure
    assert list(failure.fields) == list(fields) and not failure.retries_exhausted
    assert failure.create_time.seconds > 0
    assert not request.steps[0].HasField("done_time")
    actions = [e.action for e in request.events]
    assert actions[-2:] == ["step.accounts.update.failed", "fulfilment.stopped"], actions
    assert reason in request.events[-1].note


async def test_a_step_the_members_status_forbids_stops_and_says_why(suite: Suite) -> None:
    member = await register(suite)
    created = await create(
        suite, member.member_id, CORRECTION, correction=pb.Correction(display_name="New Name")
    )
    await suite.accounts.CloseMember(
        apb.CloseMemberRequest(name=member.name, request_id="close-1", reason="member asked"),
        metadata=wallet(suite),
    )
    await verify(suite, created.name)
    # the approval's own answer says the step was refused
    stopped = await approve(suite, created.name)
    assert_stopped(stopped, "FAILED_PRECONDITION", "MEMBER_CLOSED")
    assert "New Name" not in str(stopped)
    assert_stopped(await get_request(suite, created.name), "FAILED_PRECONDITION", "MEMBER_CLOSED")
    listed = await suite.data_rights.ListDataRequests(
        pb.ListDataRequestsRequest(member=member.name), metadata=officer(suite)
    )
    assert listed.data_requests[0].step_failure.reason == "MEMBER_CLOSED"
    # nothing happens on its own: the officer rejects it, and the failure stays as the cause
    assert await suite.privacy_service.component.fulfiller.resume_due() == 0  # type: ignore[attr-defined]
    rejected = await suite.data_rights.RejectDataRequest(
        pb.RejectDataRequestRequest(name=created.name, reason="the account is closed"),
        metadata=officer(suite),
    )
    assert rejected.state == pb.DATA_REQUEST_STATE_REJECTED
    assert rejected.step_failure.reason == "MEMBER_CLOSED"


async def test_values_accounts_refuses_at_fulfilment_name_the_field(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request received before accounts checked the values at creation (issue 12)."""

    async def unchecked(member_id: str, changes: Sequence[tuple[str, str]], key: str) -> None:
        return None

    monkeypatch.setattr(rights(suite), "_check_correction", unchecked)
    member = await register(suite)
    created = await create(
        suite, member.member_id, CORRECTION, correction=pb.Correction(email="not-an-email")
    )
    await verify(suite, created.name)
    stopped = await approve(suite, created.name)
    assert_stopped(stopped, "INVALID_ARGUMENT", "INVALID_ARGUMENT", ["correction.email"])
    assert "not-an-email" not in str(stopped)
    assert stopped.steps[0].last_error == "accounts: INVALID_ARGUMENT"


async def test_a_stopped_correction_completes_when_approved_again_after_the_cause_went(
    suite: Suite,
) -> None:
    wanted = next_phone()
    holder = await register(suite, wanted)
    member = await register(suite)
    created = await create(
        suite, member.member_id, CORRECTION, correction=pb.Correction(phone=wanted)
    )
    await verify(suite, created.name)
    assert_stopped(await approve(suite, created.name), "ALREADY_EXISTS", "PHONE_TAKEN")

    # the other member gives the number up; the officer approves again (a new key)
    await suite.accounts.UpdateMember(
        apb.UpdateMemberRequest(
            member=apb.Member(name=holder.name, phone=next_phone()),
            update_mask=field_mask_pb2.FieldMask(paths=["phone"]),
            request_id="give-up-phone",
        ),
        metadata=wallet(suite),
    )
    done = await approve(suite, created.name)
    assert done.state == pb.DATA_REQUEST_STATE_COMPLETED, done
    assert not done.HasField("step_failure")
    actions = [e.action for e in done.events]
    assert actions[-3:] == ["resumed", "step.accounts.update", "completed"], actions
