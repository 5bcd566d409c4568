"""Closing a data-subject request (issue 12): what an illegal move says, and repeats of a
rejection or a cancellation: a replay (same request_id, same payload) answers the first
result, any other repeat is ILLEGAL_TRANSITION."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import grpc
from membership.privacy.v1 import data_rights_pb2 as pb

from tests.support.accounts import register
from tests.support.data_rights import approve, create, officer, verify, wallet
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EXISTS = grpc.StatusCode.ALREADY_EXISTS


def reject(suite: Suite, name: str, reason: str, key: str = "") -> Awaitable[pb.DataRequest]:
    request = pb.RejectDataRequestRequest(name=name, reason=reason, request_id=key)
    return suite.data_rights.RejectDataRequest(request, metadata=officer(suite))  # type: ignore[no-any-return]


def cancel(suite: Suite, name: str, key: str = "") -> Awaitable[pb.DataRequest]:
    request = pb.CancelDataRequestRequest(name=name, request_id=key)
    return suite.data_rights.CancelDataRequest(request, metadata=wallet(suite))  # type: ignore[no-any-return]


async def illegal(call: Awaitable[object], message: str) -> None:
    err = await expect_error(call, FAILED_PRECONDITION, reason="ILLEGAL_TRANSITION")
    assert err.message == message, err.describe()


async def closing_events(db: asyncpg.Connection, name: str) -> list[str]:
    rows = await db.fetch(
        "SELECT action FROM privacy.audit_log WHERE request_id = $1"
        " AND action IN ('data_request.rejected', 'data_request.cancelled') ORDER BY seq",
        name,
    )
    return [r["action"] for r in rows]


async def test_every_illegal_move_says_what_cannot_be_done(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    await cancel(suite, created.name)
    name = created.name
    attestation = pb.WalletAttestation(method="face_match", reference="wallet-check-1")
    moves: dict[str, Callable[[], Awaitable[object]]] = {
        "cannot get a verification code": lambda: suite.data_rights.IssueVerificationCode(
            pb.IssueVerificationCodeRequest(name=name), metadata=wallet(suite)
        ),
        "cannot be verified": lambda: suite.data_rights.VerifyIdentity(
            pb.VerifyIdentityRequest(name=name, attestation=attestation), metadata=wallet(suite)
        ),
        "cannot be approved": lambda: approve(suite, name),
        "cannot be rejected": lambda: reject(suite, name, "too late"),
        "cannot be cancelled": lambda: cancel(suite, name),
        "cannot have its deadline extended": lambda: suite.data_rights.ExtendDataRequestDeadline(
            pb.ExtendDataRequestDeadlineRequest(
                name=name, extra_working_days=5, reason="complex case", request_id="ext-1"
            ),
            metadata=officer(suite),
        ),
    }
    for refusal, move in moves.items():
        await illegal(move(), f"a request in state CANCELLED {refusal}")


async def test_a_partly_fulfilled_request_cannot_be_rejected_and_says_why(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, RESTRICTION)
    await verify(suite, created.name)
    # as a run leaves it that did its step and stopped before completing the request
    await db.execute(
        "UPDATE privacy.data_requests SET state = 'IN_PROGRESS', approve_request_id = 'a-1',"
        ' steps = \'[{"name": "processing.pause", "done_at": "2026-12-07T08:00:00+00:00",'
        ' "last_error": ""}]\','
        " next_attempt_at = NULL WHERE id = $1",
        created.name.removeprefix("dataRequests/"),
    )
    await illegal(
        reject(suite, created.name, "no longer wanted"),
        "a request in state IN_PROGRESS cannot be rejected: part of it was fulfilled",
    )


async def test_a_rejection_repeated_with_its_key_replays_and_any_other_is_illegal(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    reason = "the requester could not be identified"
    first = await reject(suite, created.name, reason, "reject-1")
    assert first.state == pb.DATA_REQUEST_STATE_REJECTED

    # a replay (the first answer was lost): the first result, nothing recorded again
    assert await reject(suite, created.name, reason, "reject-1") == first
    # the key with another payload, or used to cancel: a reused key
    for call in (
        reject(suite, created.name, "another reason", "reject-1"),
        cancel(suite, created.name, "reject-1"),
    ):
        await expect_error(call, EXISTS, reason="IDEMPOTENCY_KEY_REUSED")
    # not a replay: another key, or none, is a second rejection of a closed request
    for call in (
        reject(suite, created.name, reason, "reject-2"),
        reject(suite, created.name, reason),
    ):
        await illegal(call, "a request in state REJECTED cannot be rejected")
    assert await closing_events(db, created.name) == ["data_request.rejected"]


async def test_a_cancellation_repeated_with_its_key_replays_and_any_other_is_illegal(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    await verify(suite, created.name)
    first = await cancel(suite, created.name, "cancel-1")
    assert first.state == pb.DATA_REQUEST_STATE_CANCELLED

    assert await cancel(suite, created.name, "cancel-1") == first
    await expect_error(
        reject(suite, created.name, "a reason", "cancel-1"), EXISTS, reason="IDEMPOTENCY_KEY_REUSED"
    )
    for call in (cancel(suite, created.name, "cancel-2"), cancel(suite, created.name)):
        await illegal(call, "a request in state CANCELLED cannot be cancelled")
    assert await closing_events(db, created.name) == ["data_request.cancelled"]


async def test_a_closing_key_is_checked_like_any_key(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    for call in (
        reject(suite, created.name, "a reason", "k" * 129),
        cancel(suite, created.name, "bad\nkey"),
    ):
        await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT, fields={"request_id"})
