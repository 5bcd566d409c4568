"""Data-subject requests when things go wrong: a rejection racing a running fulfilment, an
unforeseen failure in a step, the member erased while other requests are open, a lost
erasure journal, too many verification codes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import asyncpg
import grpc
import pytest
from membership.privacy.v1 import data_rights_pb2 as pb

from services.privacy.data_request_steps import StepExecutor
from services.privacy.domain.data_request_fulfilment import StepOutcome
from services.privacy.domain.data_requests import DataRequest, StepName
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.server import PrivacyComponent
from services.privacy.settings import journal_path
from tests.support.accounts import register
from tests.support.data_rights import approve, create, get_request, officer, verify, wallet
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

ACCESS = pb.DATA_REQUEST_TYPE_ACCESS
RESTRICTION = pb.DATA_REQUEST_TYPE_RESTRICTION
DELETION = pb.DATA_REQUEST_TYPE_DELETION


def parts(suite: Suite) -> PrivacyComponent:
    return cast(PrivacyComponent, suite.privacy_service.component)


async def test_a_rejection_waits_for_a_running_fulfilment_and_then_wins(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a step runs the request cannot be rejected (what the step does cannot be
    undone); once the run stopped without doing anything, the rejection stands and the
    resumer leaves the request alone."""
    member = await register(suite)
    created = await create(suite, member.member_id, RESTRICTION)
    await verify(suite, created.name)
    entered, release = asyncio.Event(), asyncio.Event()
    original = StepExecutor.execute

    async def slow(self: StepExecutor, row: DataRequest, step: StepName) -> StepOutcome:
        entered.set()
        await release.wait()
        raise OSError("the disk went away")

    monkeypatch.setattr(StepExecutor, "execute", slow)
    approval = asyncio.ensure_future(approve(suite, created.name))
    await entered.wait()
    reject = pb.RejectDataRequestRequest(name=created.name, reason="withdrawn by phone")
    await expect_error(
        suite.data_rights.RejectDataRequest(reject, metadata=officer(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="FULFILMENT_RUNNING",
    )
    release.set()
    stopped = await approval
    assert stopped.state == pb.DATA_REQUEST_STATE_IN_PROGRESS
    assert stopped.steps[0].last_error == "OSError"  # recorded: type only, retried later
    rejected = await suite.data_rights.RejectDataRequest(reject, metadata=officer(suite))
    assert rejected.state == pb.DATA_REQUEST_STATE_REJECTED
    monkeypatch.setattr(StepExecutor, "execute", original)
    await parts(suite).fulfiller.run(created.name.split("/")[1])
    assert (await get_request(suite, created.name)).state == pb.DATA_REQUEST_STATE_REJECTED


async def test_an_unforeseen_failure_does_not_hold_up_other_requests(
    suite: Suite, monkeypatch: pytest.MonkeyPatch, db: asyncpg.Connection
) -> None:
    member = await register(suite)
    broken = await create(suite, member.member_id, RESTRICTION)
    fine = await create(suite, member.member_id, RESTRICTION)
    for request in (broken, fine):
        await verify(suite, request.name)
    original = StepExecutor.execute

    async def failing_once(self: StepExecutor, row: DataRequest, step: StepName) -> StepOutcome:
        if f"dataRequests/{row.id}" == broken.name:
            raise RuntimeError("a bug")
        return await original(self, row, step)

    monkeypatch.setattr(StepExecutor, "execute", failing_once)
    assert (await approve(suite, broken.name)).state == pb.DATA_REQUEST_STATE_IN_PROGRESS
    # both are due now: the broken one first, and it must not stop the other
    await db.execute("UPDATE privacy.data_requests SET next_attempt_at = now() - interval '1s'")
    await db.execute(
        "UPDATE privacy.data_requests SET state = 'IN_PROGRESS', approve_request_id = 'x',"
        ' steps = \'[{"name": "processing.pause", "done_at": null, "last_error": ""}]\','
        " next_attempt_at = now() WHERE id = $1",
        fine.name.split("/")[1],
    )
    assert await parts(suite).fulfiller.resume_due() == 2
    assert (await get_request(suite, fine.name)).state == pb.DATA_REQUEST_STATE_COMPLETED
    still = await get_request(suite, broken.name)
    assert still.state == pb.DATA_REQUEST_STATE_IN_PROGRESS and still.steps[0].last_error


async def test_erasing_a_member_rejects_their_other_open_requests(suite: Suite) -> None:
    member = await register(suite)
    pending = await create(suite, member.member_id, ACCESS)
    deletion = await create(suite, member.member_id, DELETION)
    await verify(suite, deletion.name)
    assert (await approve(suite, deletion.name)).state == pb.DATA_REQUEST_STATE_COMPLETED
    closed = await get_request(suite, pending.name)
    assert closed.state == pb.DATA_REQUEST_STATE_REJECTED
    assert deletion.name in closed.rejection_reason
    await expect_error(
        create(suite, member.member_id, ACCESS),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="MEMBER_ERASED",
    )


async def test_the_journal_is_completed_from_the_database_at_start(
    suite: Suite, keys_dir: Path
) -> None:
    """A journal that lost entries (a torn write, a wrong volume) gets back every erasure
    the database records when privacy starts."""
    member = await register(suite)
    deletion = await create(suite, member.member_id, DELETION)
    await verify(suite, deletion.name)
    await approve(suite, deletion.name)
    journal = ErasureJournal(journal_path({}, keys_dir))
    journal.path.unlink()
    assert await parts(suite).fulfiller.reapply_erasures() == 0
    assert [e.member_id for e in journal.entries()] == [member.member_id]


async def test_verification_codes_are_bounded_per_request(suite: Suite) -> None:
    member = await register(suite)
    created = await create(suite, member.member_id, ACCESS)
    issue = pb.IssueVerificationCodeRequest(name=created.name)
    for _ in range(5):
        await suite.data_rights.IssueVerificationCode(issue, metadata=wallet(suite))
    await expect_error(
        suite.data_rights.IssueVerificationCode(issue, metadata=wallet(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="TOO_MANY_CODES",
    )
