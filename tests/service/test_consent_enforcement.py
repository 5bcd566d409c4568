"""Withdrawing `payment_records` consent pauses settling the member's payments in points,
pushed through privacy's outbox (points never asks privacy); granting it again resumes."""

from __future__ import annotations

import asyncio
import time
from itertools import count

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb

from tests.service.test_points_settlement import payment, settler
from tests.support.accounts import register
from tests.support.consent import grant_request, wallet, withdraw_request
from tests.support.rpc_errors import rpc_error
from tests.support.suite import Suite

WAIT_S = 15.0


async def settle_outcome(suite: Suite, member_id: str, payment_id: str) -> str:
    """OK, or the error reason of settling one payment."""
    try:
        await suite.points.SettlePayment(payment(member_id, payment_id), metadata=settler(suite))
    except grpc.aio.AioRpcError as exc:
        return (await rpc_error(_raise(exc))).reason
    return "OK"


async def _raise(exc: grpc.aio.AioRpcError) -> None:
    raise exc


async def eventually(suite: Suite, member_id: str, wanted: str, payment_id: str) -> None:
    """Until settling answers `wanted` (the relays deliver within their poll interval)."""
    deadline = time.monotonic() + WAIT_S
    got = ""
    for attempt in count():
        if time.monotonic() >= deadline:
            break
        # a new payment each time: a repeat would answer with its first result
        got = await settle_outcome(suite, member_id, f"{payment_id}-{attempt}")
        if got == wanted:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"settling answered {got}, not {wanted}, after {WAIT_S}s")


async def test_withdrawing_payment_records_pauses_settlement_until_granted_again(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = (await register(suite)).name.removeprefix("members/")
    member = f"members/{member_id}"
    await suite.consent.GrantConsent(
        grant_request(member, "payment_records", request_id="g-1"), metadata=wallet(suite)
    )
    await eventually(suite, member_id, "OK", "p-1")  # points knows the member, not paused
    await suite.consent.WithdrawConsent(
        withdraw_request(member, "payment_records", request_id="w-1"), metadata=wallet(suite)
    )
    await eventually(suite, member_id, "PROCESSING_RESTRICTED", "p-2")
    await suite.consent.GrantConsent(
        grant_request(member, "payment_records", request_id="g-2"), metadata=wallet(suite)
    )
    await eventually(suite, member_id, "OK", "p-2")
    causes = await db.fetch(
        "SELECT cause, paused FROM privacy.outbox WHERE member_id = $1 ORDER BY event_id",
        member_id,
    )
    # one event per change of payment_records consent, in order
    assert [tuple(r) for r in causes] == [
        ("CONSENT_WITHDRAWN", False),
        ("CONSENT_WITHDRAWN", True),
        ("CONSENT_WITHDRAWN", False),
    ]


async def test_other_purposes_do_not_pause_settlement(suite: Suite, db: asyncpg.Connection) -> None:
    member_id = (await register(suite)).name.removeprefix("members/")
    member = f"members/{member_id}"
    await suite.consent.GrantConsent(
        grant_request(member, "marketing", request_id="g-1"), metadata=wallet(suite)
    )
    await suite.consent.WithdrawConsent(
        withdraw_request(member, "marketing", request_id="w-1"), metadata=wallet(suite)
    )
    await eventually(suite, member_id, "OK", "p-1")
    assert await db.fetchval("SELECT count(*) FROM privacy.outbox") == 0
    assert pb.PROCESSING_CAUSE_CONSENT_WITHDRAWN  # the cause points records for consent
