"""Data-subject requests: deadlines across holidays, identity proof, decisions, the queue."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from membership.privacy.v1 import data_rights_pb2 as pb

from services.privacy.data_requests import DataRequests
from services.privacy.server import PrivacyComponent
from tests.support.accounts import next_request_id, register
from tests.support.data_rights import approve, create, officer, verify, wallet
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

SHANGHAI = ZoneInfo("Asia/Shanghai")
ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION


def rights(suite: Suite) -> DataRequests:
    return cast(PrivacyComponent, suite.privacy_service.component).data_requests


@pytest.fixture
def clock(suite: Suite) -> Iterator[list[datetime]]:
    """The privacy service's clock, set by the test (a one-element list)."""
    now = [datetime.now(SHANGHAI)]
    service = rights(suite)
    original = service.clock
    service.clock = lambda: now[0]
    yield now
    service.clock = original


def due(request: pb.DataRequest) -> date:
    return date(request.due_date.year, request.due_date.month, request.due_date.day)


@pytest.mark.parametrize(
    ("received", "due_date"),
    [
        # Spring Festival 2026: Feb 15-23 off, Sat Feb 14 and Sat Feb 28 are working days
        (datetime(2026, 2, 10, 10, tzinfo=SHANGHAI), date(2026, 3, 9)),
        # National Day 2026: Oct 1-7 off, Sun Sep 20 and Sat Oct 10 are working days
        (datetime(2026, 9, 25, 10, tzinfo=SHANGHAI), date(2026, 10, 22)),
        # received on a holiday: counting starts on the first working day after it
        (datetime(2026, 10, 3, 10, tzinfo=SHANGHAI), date(2026, 10, 27)),
    ],
)
async def test_deadlines_count_china_working_days(
    suite: Suite, clock: list[datetime], received: datetime, due_date: date
) -> None:
    clock[0] = received
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    assert due(created) == due_date
    assert created.working_days == 15 and not created.deadline_provisional
    # overdue from 00:00 Shanghai after the due date, not before
    clock[0] = datetime(due_date.year, due_date.month, due_date.day, 23, 59, tzinfo=SHANGHAI)
    assert not (await get(suite, created.name)).overdue
    clock[0] += timedelta(minutes=1)
    assert (await get(suite, created.name)).overdue


async def get(suite: Suite, name: str) -> pb.DataRequest:
    got: pb.DataRequest = await suite.data_rights.GetDataRequest(
        pb.GetDataRequestRequest(name=name), metadata=officer(suite)
    )
    return got


async def test_an_extension_moves_the_deadline_with_a_reason(
    suite: Suite, clock: list[datetime]
) -> None:
    clock[0] = datetime(2026, 9, 25, 10, tzinfo=SHANGHAI)
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    extend = pb.ExtendDataRequestDeadlineRequest(
        name=created.name, extra_working_days=15, reason="complex request", request_id="ext-1"
    )
    extended = await suite.data_rights.ExtendDataRequestDeadline(extend, metadata=officer(suite))
    assert extended.working_days == 30 and due(extended) == date(2026, 11, 12)
    assert [(e.extra_working_days, e.reason) for e in extended.extensions] == [
        (15, "complex request")
    ]
    again = await suite.data_rights.ExtendDataRequestDeadline(extend, metadata=officer(suite))
    assert again.working_days == 30  # a repeat of the same request
    extend.reason = "something else"
    await expect_error(
        suite.data_rights.ExtendDataRequestDeadline(extend, metadata=officer(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )
    extend.request_id, extend.reason = "ext-2", ""
    await expect_error(
        suite.data_rights.ExtendDataRequestDeadline(extend, metadata=officer(suite)),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"reason"},
    )


async def test_a_wrong_code_counts_an_attempt_and_used_up_codes_are_refused(
    suite: Suite,
) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    issued = await suite.data_rights.IssueVerificationCode(
        pb.IssueVerificationCodeRequest(name=created.name), metadata=wallet(suite)
    )
    wrong = "00000000" if issued.code != "00000000" else "11111111"
    for left in range(issued.attempts_allowed - 1, -1, -1):
        err = await expect_error(
            verify_code(suite, created.name, wrong),
            grpc.StatusCode.INVALID_ARGUMENT,
            reason="VERIFICATION_CODE_WRONG",
        )
        assert err.metadata["attempts_left"] == str(left)
    # even the right code is refused once the attempts are used up
    await expect_error(
        verify_code(suite, created.name, issued.code),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="VERIFICATION_CODE_USED_UP",
    )
    assert (await get(suite, created.name)).state == pb.DATA_REQUEST_STATE_RECEIVED
    assert (await verify(suite, created.name)).state == pb.DATA_REQUEST_STATE_IDENTITY_VERIFIED


def verify_code(suite: Suite, name: str, code: str) -> grpc.aio.UnaryUnaryCall:
    return suite.data_rights.VerifyIdentity(
        pb.VerifyIdentityRequest(name=name, code=code), metadata=officer(suite)
    )


async def test_an_expired_code_is_refused(suite: Suite, clock: list[datetime]) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    issued = await suite.data_rights.IssueVerificationCode(
        pb.IssueVerificationCodeRequest(name=created.name), metadata=wallet(suite)
    )
    clock[0] += timedelta(minutes=10)
    await expect_error(
        verify_code(suite, created.name, issued.code),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="VERIFICATION_CODE_EXPIRED",
    )


async def test_only_the_wallet_backend_attests_and_names_its_method(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    attestation = pb.WalletAttestation(method="face_match", reference="wallet-check-77")
    request = pb.VerifyIdentityRequest(name=created.name, attestation=attestation)
    await expect_error(
        suite.data_rights.VerifyIdentity(request, metadata=officer(suite)),
        grpc.StatusCode.PERMISSION_DENIED,
        reason="ATTESTATION_NOT_ALLOWED",
    )
    verified = await suite.data_rights.VerifyIdentity(request, metadata=wallet(suite))
    assert verified.verification_method == pb.VERIFICATION_METHOD_WALLET_ATTESTATION
    assert verified.attestation_method == "face_match"
    await expect_error(
        suite.data_rights.VerifyIdentity(request, metadata=wallet(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="ILLEGAL_TRANSITION",
    )


async def test_a_rejection_needs_a_reason_and_is_final(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    reject = pb.RejectDataRequestRequest(name=created.name, reason="  ")
    await expect_error(
        suite.data_rights.RejectDataRequest(reject, metadata=officer(suite)),
        grpc.StatusCode.INVALID_ARGUMENT,
        reason="REASON_REQUIRED",
    )
    assert (await get(suite, created.name)).state == pb.DATA_REQUEST_STATE_RECEIVED
    reject.reason = "the requester could not be identified"
    reject.request_id = "reject-1"
    rejected = await suite.data_rights.RejectDataRequest(reject, metadata=officer(suite))
    assert rejected.state == pb.DATA_REQUEST_STATE_REJECTED
    assert rejected.rejection_reason == reject.reason and not rejected.overdue
    # a repeat of the rejection with its key (its answer was lost) answers the same;
    # anything else is an illegal transition (test_data_request_decisions.py: every case)
    again = await suite.data_rights.RejectDataRequest(reject, metadata=officer(suite))
    assert again.state == pb.DATA_REQUEST_STATE_REJECTED
    other_reason = pb.RejectDataRequestRequest(name=created.name, reason="another reason")
    for call in (
        suite.data_rights.CancelDataRequest(
            pb.CancelDataRequestRequest(name=created.name), metadata=wallet(suite)
        ),
        approve(suite, created.name),
        suite.data_rights.RejectDataRequest(other_reason, metadata=officer(suite)),
    ):
        await expect_error(call, grpc.StatusCode.FAILED_PRECONDITION, reason="ILLEGAL_TRANSITION")


async def test_the_member_can_cancel_before_fulfilment(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    await verify(suite, created.name)
    cancelled = await suite.data_rights.CancelDataRequest(
        pb.CancelDataRequestRequest(name=created.name), metadata=wallet(suite)
    )
    assert cancelled.state == pb.DATA_REQUEST_STATE_CANCELLED


async def test_bad_requests_change_nothing(suite: Suite, db: asyncpg.Connection) -> None:
    member = await register(suite)
    await expect_error(create(suite, "mnosuchmember00000001", ACCESS), grpc.StatusCode.NOT_FOUND)
    await expect_error(
        create(suite, member.member_id, pb.DATA_REQUEST_TYPE_CONSENT_WITHDRAWAL, purposes=["nope"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"data_request.purposes[0]"},
    )
    await expect_error(
        create(
            suite, member.member_id, pb.DATA_REQUEST_TYPE_CONSENT_WITHDRAWAL, purposes=["service"]
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="NECESSARY_PURPOSE",
    )
    await expect_error(
        create(suite, member.member_id, ACCESS, purposes=["marketing"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"data_request.purposes"},
    )
    await expect_error(
        create(suite, member.member_id, pb.DATA_REQUEST_TYPE_CORRECTION),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"data_request.correction"},
    )
    await expect_error(get(suite, "dataRequests/drnosuchrequestaaaaaaa"), grpc.StatusCode.NOT_FOUND)
    assert await db.fetchval("SELECT count(*) FROM privacy.data_requests") == 0


async def test_a_repeated_create_returns_the_first_request(suite: Suite) -> None:
    member = await register(suite)
    request = pb.CreateDataRequestRequest(
        data_request=pb.DataRequest(
            member=f"members/{member.member_id}",
            type=ACCESS,
            channel=1,  # type: ignore[arg-type]
        ),
        request_id=next_request_id("dsr"),
    )
    first = await suite.data_rights.CreateDataRequest(request, metadata=wallet(suite))
    again = await suite.data_rights.CreateDataRequest(request, metadata=wallet(suite))
    assert again.name == first.name
    request.data_request.type = RESTRICTION
    await expect_error(
        suite.data_rights.CreateDataRequest(request, metadata=wallet(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )


async def test_the_queue_filters_and_puts_overdue_requests_first(
    suite: Suite, clock: list[datetime]
) -> None:
    member = await register(suite)
    real_now = clock[0]
    clock[0] = real_now - timedelta(days=60)
    late = await create(suite, member.member_id, ACCESS)
    clock[0] = real_now
    fresh = await create(suite, member.member_id, RESTRICTION)
    done = await create(suite, member.member_id, ACCESS)
    await suite.data_rights.CancelDataRequest(
        pb.CancelDataRequestRequest(name=done.name), metadata=wallet(suite)
    )
    queue = await list_requests(suite)
    assert [r.name for r in queue] == [late.name, fresh.name, done.name]
    assert [r.overdue for r in queue] == [True, False, False]
    assert [r.name for r in await list_requests(suite, overdue_only=True)] == [late.name]
    assert [r.name for r in await list_requests(suite, types=[RESTRICTION])] == [fresh.name]
    cancelled = await list_requests(suite, states=[pb.DATA_REQUEST_STATE_CANCELLED])
    assert [r.name for r in cancelled] == [done.name]
    page = await suite.data_rights.ListDataRequests(
        pb.ListDataRequestsRequest(page_size=2), metadata=officer(suite)
    )
    rest = await suite.data_rights.ListDataRequests(
        pb.ListDataRequestsRequest(page_size=2, page_token=page.next_page_token),
        metadata=officer(suite),
    )
    assert [r.name for r in [*page.data_requests, *rest.data_requests]] == [
        late.name,
        fresh.name,
        done.name,
    ]
    assert rest.next_page_token == ""
    await expect_error(
        suite.data_rights.ListDataRequests(pb.ListDataRequestsRequest(), metadata=wallet(suite)),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def list_requests(suite: Suite, **filters: Any) -> list[pb.DataRequest]:
    response = await suite.data_rights.ListDataRequests(
        pb.ListDataRequestsRequest(**filters),
        metadata=officer(suite),
    )
    return list(response.data_requests)


async def test_every_transition_is_in_the_audit_chain(suite: Suite, db: asyncpg.Connection) -> None:
    member = await register(suite, email="audit@example.com")
    created = await create(suite, member.member_id, ACCESS)
    await verify(suite, created.name)
    await approve(suite, created.name)
    rows = await db.fetch(
        "SELECT action, subject_id, purpose, fields FROM privacy.audit_log"
        " WHERE request_id = $1 ORDER BY seq",
        created.name,
    )
    assert [r["action"] for r in rows][:4] == [
        "data_request.created",
        "data_request.verification_code.issued",
        "data_request.identity_verified",
        "data_request.approved",
    ]
    assert rows[-1]["action"] == "data_request.completed"
    assert all(r["subject_id"] == member.member_id for r in rows)
    assert "audit@example.com" not in repr([dict(r) for r in rows])
