"""Writes that race a registration: a member accounts has not announced to points yet.

Retryable (UNAVAILABLE `MEMBER_UNKNOWN` with RetryInfo) while the member may still arrive,
final (FAILED_PRECONDITION `MEMBER_UNKNOWN`) once a member id has been refused for longer
than the grace period; the write lands once the member has arrived."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc

from services.points.domain.jobs import UNKNOWN_MEMBER_RETENTION
from services.points.jobs import JobRunner
from services.points.metrics import PROBES
from services.runtime.clients import open_channel
from tests.service.test_points_grants import grant
from tests.service.test_points_refunds import refund
from tests.service.test_points_settlement import (
    NOW,
    announce,
    balance,
    ledger_holds,
    payment,
    settler,
)
from tests.service.test_points_spending import hold, redeem, spender
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def backdate_first_refusal(db: asyncpg.Connection, member_id: str, days: int) -> None:
    await db.execute(
        "UPDATE points.unknown_members SET first_seen_at = first_seen_at - $2::interval"
        " WHERE member_id = $1",
        member_id,
        timedelta(days=days),
    )


async def test_a_payment_before_the_member_arrives_is_retryable_then_settles(
    suite: Suite, db: asyncpg.Connection
) -> None:
    settle = suite.points.SettlePayment(payment("mlate1", "p-1"), metadata=settler(suite))
    err = await expect_error(settle, UNAVAILABLE, reason="MEMBER_UNKNOWN")
    assert err.retry_delay_s == 1.0
    assert err.domain == "points.membership"
    refused = await db.fetchrow("SELECT * FROM points.unknown_members WHERE member_id = 'mlate1'")
    assert refused is not None and refused["given_up_at"] is None
    await announce(suite, "mlate1")
    # the arrival forgets the refusals
    assert await db.fetchval("SELECT count(*) FROM points.unknown_members") == 0
    settled = await suite.points.SettlePayment(payment("mlate1", "p-1"), metadata=settler(suite))
    assert settled.points == 24
    again = await suite.points.SettlePayment(payment("mlate1", "p-1"), metadata=settler(suite))
    assert again == settled
    assert (await balance(suite, "mlate1")).pending == 24
    await ledger_holds(suite.dsn)


async def test_a_member_that_never_arrives_is_refused_for_good_after_the_grace(
    suite: Suite, db: asyncpg.Connection
) -> None:
    for attempt in ("p-1", "p-1", "p-2"):
        await expect_error(
            suite.points.SettlePayment(payment("mnever1", attempt), metadata=settler(suite)),
            UNAVAILABLE,
            reason="MEMBER_UNKNOWN",
        )
    assert (
        await db.fetchval("SELECT refusals FROM points.unknown_members WHERE member_id = 'mnever1'")
        == 3
    )
    await backdate_first_refusal(db, "mnever1", 2)  # the default grace is one day
    err = await expect_error(
        suite.points.SettlePayment(payment("mnever1", "p-1"), metadata=settler(suite)),
        FAILED,
        reason="MEMBER_UNKNOWN",
    )
    assert err.retry_delay_s is None
    assert "likely wrong" in err.message
    given_up = await db.fetchval(
        "SELECT given_up_at FROM points.unknown_members WHERE member_id = 'mnever1'"
    )
    assert given_up is not None
    # reported: the scrape-time gauge counts it
    samples = dict(await PROBES[1].query(db))
    assert samples == {("waiting",): 0.0, ("given_up",): 1.0}
    # nothing was written for it
    assert await db.fetchval("SELECT count(*) FROM points.transactions") == 0


async def test_a_batch_item_for_an_unknown_member_carries_the_retry_delay(
    suite: Suite, db: asyncpg.Connection
) -> None:
    await announce(suite, "mknown1")
    batch = pb.SettlePaymentsRequest(
        requests=[payment("mlate2", "p-1"), payment("mknown1", "p-2"), payment("mlate3", "p-3")]
    )
    got = await suite.points.SettlePayments(batch, metadata=settler(suite))
    assert [r.error_reason for r in got.results] == ["MEMBER_UNKNOWN", "", "MEMBER_UNKNOWN"]
    assert [r.retry_delay.seconds for r in got.results] == [1, 0, 1]
    await backdate_first_refusal(db, "mlate3", 2)
    got = await suite.points.SettlePayments(batch, metadata=settler(suite))
    # mlate2 still retryable, mknown1 a replay, mlate3 given up
    assert [(r.error_code, r.error_reason) for r in got.results] == [
        (14, "MEMBER_UNKNOWN"),
        (0, ""),
        (9, "MEMBER_UNKNOWN"),
    ]
    assert not got.results[2].HasField("retry_delay")


async def test_refunds_grants_holds_and_redemptions_that_race_a_registration(
    suite: Suite,
) -> None:
    member_id = "mrace1"
    wallet = suite.auth("wallet-backend")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: suite.points.RefundPayment(
            refund(member_id, "p-1", "r-1", 100), metadata=settler(suite)
        ),
        lambda: suite.points.GrantPoints(grant(member_id, "g-1", 10), metadata=wallet),
        lambda: suite.points.HoldPoints(hold(member_id, "h-1", 5), metadata=spender(suite)),
        lambda: suite.points.RedeemPoints(redeem(member_id, "d-1", 5), metadata=spender(suite)),
    ]
    for call in calls:
        err = await expect_error(call(), UNAVAILABLE, reason="MEMBER_UNKNOWN")
        assert err.retry_delay_s == 1.0
    await announce(suite, member_id)
    # the same requests, retried, now do what they ask
    await expect_error(calls[0](), grpc.StatusCode.NOT_FOUND)  # no such payment
    assert (await calls[1]()).points == 10
    assert (await calls[2]()).points == 5
    assert (await calls[3]()).points == 5
    got = await balance(suite, member_id)
    assert (got.available, got.held) == (0, 5)
    await ledger_holds(suite.dsn)


async def test_registration_then_an_immediate_payment_settles_once_with_retries(
    suite: Suite,
) -> None:
    """The real race: accounts' outbox relay, not the test, tells points of the member."""
    member = await suite.accounts.RegisterMember(
        accounts_pb2.RegisterMemberRequest(request_id="reg-1", phone="13800138000"),
        metadata=suite.auth("wallet-backend"),
    )
    request = payment(member.member_id, "p-now")
    retries = 0
    for _ in range(100):
        try:
            settled = await suite.points.SettlePayment(request, metadata=settler(suite))
            break
        except grpc.aio.AioRpcError as err:
            assert err.code() == UNAVAILABLE, err
            retries += 1
            await asyncio.sleep(0.1)  # shorter than RetryInfo's 1 s, to keep the test short
    else:
        raise AssertionError("the member never arrived at points")
    assert settled.points == 24
    assert (await balance(suite, member.member_id)).pending == 24
    await ledger_holds(suite.dsn)


async def test_the_purge_job_forgets_arrived_and_long_silent_ids(
    suite: Suite, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    for member_id in ("mgone1", "mgone2", "mback1"):
        await expect_error(
            suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite)),
            UNAVAILABLE,
        )
    # a refusal that raced the arrival leaves a row behind
    await announce(suite, "mback1")
    await db.execute(
        "INSERT INTO points.unknown_members (member_id, first_seen_at, last_seen_at)"
        " VALUES ('mback1', now(), now())"
    )
    await db.execute(
        "UPDATE points.unknown_members SET last_seen_at = last_seen_at - $1::interval"
        " WHERE member_id = 'mgone1'",
        UNKNOWN_MEMBER_RETENTION + timedelta(days=1),
    )
    reports = await JobRunner(pool).run_once(NOW)
    assert {r.job: r.done for r in reports}["unknown_member_purge"] == 2
    left = await db.fetch("SELECT member_id FROM points.unknown_members")
    assert [r["member_id"] for r in left] == ["mgone2"]


async def test_a_retrying_channel_does_not_repeat_the_refusal(
    suite: Suite, db: asyncpg.Connection
) -> None:
    """Service-to-service channels retry UNAVAILABLE by themselves; a refusal carrying
    RetryInfo tells them not to (pushback), so one call is one refusal."""
    channel = open_channel(f"127.0.0.1:{suite.points_service.port}", 1 << 20)
    try:
        stub = points_pb2_grpc.PointsServiceStub(channel)
        await expect_error(
            stub.SettlePayment(payment("mpush1", "p-1"), metadata=settler(suite)),
            UNAVAILABLE,
            reason="MEMBER_UNKNOWN",
        )
    finally:
        await channel.close()
    assert (
        await db.fetchval("SELECT refusals FROM points.unknown_members WHERE member_id = 'mpush1'")
        == 1
    )
