"""Data-subject requests end to end through the real services: lifecycle, identity,
deadlines, and every type's fulfilment."""

from __future__ import annotations

import json

import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2
from membership.privacy.v1 import consent_pb2
from membership.privacy.v1 import data_rights_pb2 as pb

from tests.support.accounts import next_request_id, register
from tests.support.data_rights import (
    approve,
    create,
    download,
    fulfilled,
    member_with_ledger,
    officer,
    verify,
    wallet,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
DELETION = pb.DATA_REQUEST_TYPE_DELETION


async def test_a_request_moves_through_its_lifecycle_with_a_timeline(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    assert created.state == pb.DATA_REQUEST_STATE_RECEIVED
    assert created.working_days == 15 and created.due_time.seconds > created.create_time.seconds
    verified = await verify(suite, created.name)
    assert verified.state == pb.DATA_REQUEST_STATE_IDENTITY_VERIFIED
    assert verified.verification_method == pb.VERIFICATION_METHOD_ONE_TIME_CODE
    done = await approve(suite, created.name)
    assert done.state == pb.DATA_REQUEST_STATE_COMPLETED, done
    assert [e.action for e in done.events] == [
        "created",
        "verification_code.issued",
        "identity_verified",
        "approved",
        "step.export.build",
        "completed",
    ]
    assert done.export.downloads_remaining == 3 and not done.export.purged


async def test_nothing_proceeds_before_identity_is_verified(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, DELETION)
    await expect_error(
        approve(suite, created.name),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="ILLEGAL_TRANSITION",
    )
    got = await suite.data_rights.GetDataRequest(
        pb.GetDataRequestRequest(name=created.name), metadata=officer(suite)
    )
    assert got.state == pb.DATA_REQUEST_STATE_RECEIVED


async def test_deletion_erases_the_member_and_keeps_the_ledger_restricted(
    suite: Suite, db: asyncpg.Connection
) -> None:
    phone = "+8613800991234"
    member_id = await member_with_ledger(suite, phone=phone, email="del@example.com")
    done = await fulfilled(suite, member_id, DELETION)
    assert done.state == pb.DATA_REQUEST_STATE_COMPLETED, done
    assert done.deletion_outcome == pb.DELETION_OUTCOME_RETAINED_RESTRICTED
    got = await suite.accounts.GetMember(
        accounts_pb2.GetMemberRequest(name=f"members/{member_id}"), metadata=officer(suite)
    )
    assert got.status == accounts_pb2.MEMBER_STATUS_ERASED
    again = await register(suite, phone=phone)
    assert again.member_id != member_id


async def test_access_export_holds_profile_ledger_and_consents(suite: Suite) -> None:
    member_id = await member_with_ledger(suite, email="acc@example.com", display_name="Li Lei")
    done = await fulfilled(suite, member_id, ACCESS)
    files = await download(suite, done.name)
    bundle = json.loads(files["bundle.json"])
    assert "acc@example.com" in files["bundle.json"].decode()
    assert len(files["ledger.csv"].decode().strip().splitlines()) == 1 + 2
    assert bundle["request"]
    after = await suite.data_rights.GetDataRequest(
        pb.GetDataRequestRequest(name=done.name), metadata=officer(suite)
    )
    assert after.export.downloads_remaining == 2


@pytest.mark.parametrize("channel", [consent_pb2.CHANNEL_UNSPECIFIED])
async def test_bad_create_input_is_invalid_argument(suite: Suite, channel: int) -> None:
    member = await register(suite)
    request = pb.DataRequest(member=f"members/{member.member_id}", type=ACCESS, channel=channel)  # type: ignore[arg-type]
    await expect_error(
        suite.data_rights.CreateDataRequest(
            pb.CreateDataRequestRequest(data_request=request, request_id=next_request_id()),
            metadata=wallet(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"channel"},
    )
