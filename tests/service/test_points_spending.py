"""HoldPoints, CapturePoints, ReleaseHold, RedeemPoints and the hold_expiry job: lots taken
soonest-expiring first and given back exactly, each change at most once, no double spend."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points.domain.jobs import JobReport
from services.points.jobs import JobRunner
from services.points.server import SPEC as POINTS
from services.runtime.server import start_service
from tests.service.test_points_settlement import (
    NOW,
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
    ts,
)
from tests.support.rpc_errors import expect_error, parse_rpc_error
from tests.support.suite import Metadata, Suite

Stub = pb_grpc.PointsServiceStub
OLDEST = NOW - timedelta(days=85)  # 55 days apart: always two different month ends
OLDER = NOW - timedelta(days=30)


def spender(suite: Suite) -> Metadata:
    return suite.auth("wallet-backend")


async def earned(suite: Suite, member_id: str, pid: str, minor: int, at: datetime) -> pb.Settlement:
    """Dining earns 2 points per CNY; a payment past the return window is available at once."""
    got: pb.Settlement = await suite.points.SettlePayment(
        payment(member_id, pid, minor, occurred=at), metadata=settler(suite)
    )
    assert got.state == pb.POINTS_STATE_AVAILABLE
    return got


async def two_lots(suite: Suite, db: asyncpg.Connection) -> tuple[str, int, int]:
    """A member with 12 points expiring first (lot a) and 20 expiring later (lot b)."""
    member_id = await known_member(suite)
    first = await earned(suite, member_id, "p-a", 600, OLDEST)
    second = await earned(suite, member_id, "p-b", 1000, OLDER)
    assert (first.points, second.points) == (12, 20)
    assert first.expire_time.ToDatetime() < second.expire_time.ToDatetime()
    return member_id, await lot_id(db, member_id, first), await lot_id(db, member_id, second)


async def lot_id(db: asyncpg.Connection, member_id: str, settled: pb.Settlement) -> int:
    txn = int(settled.transaction.rsplit("/", 1)[1])
    got = await db.fetchval(
        "SELECT lot_id FROM points.lots WHERE member_id = $1 AND txn_id = $2", member_id, txn
    )
    return int(got)


async def remaining(db: asyncpg.Connection, member_id: str, *lots: int) -> list[int]:
    rows = await db.fetch(
        "SELECT lot_id, remaining FROM points.lots WHERE member_id = $1", member_id
    )
    by_id = {r["lot_id"]: r["remaining"] for r in rows}
    return [by_id[lot] for lot in lots]


async def moves(
    db: asyncpg.Connection, member_id: str, transaction: str
) -> list[tuple[object, ...]]:
    rows = await db.fetch(
        "SELECT from_account, to_account, amount, lot_id FROM points.transfers"
        " WHERE member_id = $1 AND txn_id = $2 ORDER BY transfer_id",
        member_id,
        int(transaction.rsplit("/", 1)[1]),
    )
    return [(r["from_account"], r["to_account"], r["amount"], r["lot_id"]) for r in rows]


def hold(member_id: str, hold_id: str, points: int) -> pb.HoldPointsRequest:
    return pb.HoldPointsRequest(
        member=f"members/{member_id}", hold_id=hold_id, points=points, reference="order-1"
    )


def capture(member_id: str, hold_id: str, capture_id: str, points: int) -> pb.CapturePointsRequest:
    name = f"members/{member_id}/holds/{hold_id}"
    return pb.CapturePointsRequest(name=name, capture_id=capture_id, points=points)


def release(member_id: str, hold_id: str, request_id: str) -> pb.ReleaseHoldRequest:
    return pb.ReleaseHoldRequest(name=f"members/{member_id}/holds/{hold_id}", request_id=request_id)


def redeem(member_id: str, request_id: str, points: int) -> pb.RedeemPointsRequest:
    return pb.RedeemPointsRequest(
        member=f"members/{member_id}", request_id=request_id, points=points, reference="sku-1"
    )


async def held(suite: Suite, request: pb.HoldPointsRequest) -> pb.Hold:
    got: pb.Hold = await suite.points.HoldPoints(request, metadata=spender(suite))
    return got


async def captured(suite: Suite, request: pb.CapturePointsRequest) -> pb.Hold:
    got: pb.Hold = await suite.points.CapturePoints(request, metadata=spender(suite))
    return got


async def released(suite: Suite, request: pb.ReleaseHoldRequest) -> pb.Hold:
    got: pb.Hold = await suite.points.ReleaseHold(request, metadata=spender(suite))
    return got


async def redeemed(suite: Suite, request: pb.RedeemPointsRequest) -> pb.Redemption:
    got: pb.Redemption = await suite.points.RedeemPoints(request, metadata=spender(suite))
    return got


async def refused(call: object, code: grpc.StatusCode, reason: str) -> None:
    await expect_error(call, code, reason=reason)  # type: ignore[arg-type]


async def test_a_partial_capture_redeems_the_soonest_points_and_gives_back_the_rest(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, a, b = await two_lots(suite, db)
    got = await held(suite, hold(member_id, "h-1", 25))
    assert (got.name, got.state, got.points) == (
        f"members/{member_id}/holds/h-1",
        pb.HOLD_STATE_HELD,
        25,
    )
    expires = got.expire_time.ToDatetime(tzinfo=UTC)
    assert timedelta(seconds=890) < expires - datetime.now(UTC) <= timedelta(seconds=900)
    assert await moves(db, member_id, got.transaction) == [
        ("member:available", "member:held", 12, a),
        ("member:available", "member:held", 13, b),
    ]
    assert await remaining(db, member_id, a, b) == [0, 7]
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (7, 25)
    await ledger_holds(suite.dsn)
    done = await captured(suite, capture(member_id, "h-1", "c-1", 15))
    assert (done.state, done.captured_points, done.points) == (pb.HOLD_STATE_CAPTURED, 15, 25)
    assert await moves(db, member_id, done.transaction) == [
        ("member:held", "program:redeemed", 12, a),
        ("member:held", "program:redeemed", 3, b),
        ("member:held", "member:available", 10, b),
    ]
    assert await remaining(db, member_id, a, b) == [0, 17]
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (17, 0)
    await ledger_holds(suite.dsn)


async def test_a_hold_is_captured_or_released_at_most_once(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, _, _ = await two_lots(suite, db)
    first = await held(suite, hold(member_id, "h-1", 10))
    assert await held(suite, hold(member_id, "h-1", 10)) == first
    await refused(
        suite.points.HoldPoints(hold(member_id, "h-1", 11), metadata=spender(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    done = await captured(suite, capture(member_id, "h-1", "c-1", 10))
    assert await captured(suite, capture(member_id, "h-1", "c-1", 10)) == done
    await refused(
        suite.points.CapturePoints(capture(member_id, "h-1", "c-1", 9), metadata=spender(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    for again in (
        suite.points.CapturePoints(capture(member_id, "h-1", "c-2", 10), metadata=spender(suite)),
        suite.points.ReleaseHold(release(member_id, "h-1", "r-1"), metadata=spender(suite)),
    ):
        await refused(again, grpc.StatusCode.FAILED_PRECONDITION, "HOLD_NOT_HELD")
    assert (await balance(suite, member_id)).available == 22
    kinds = await db.fetch(
        "SELECT kind FROM points.transactions WHERE member_id = $1 AND kind <> 'settlement'"
        " ORDER BY txn_id",
        member_id,
    )
    assert [k["kind"] for k in kinds] == ["hold", "capture"]
    await ledger_holds(suite.dsn)


async def test_a_released_hold_gives_back_exactly_its_lots(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, a, b = await two_lots(suite, db)
    got = await held(suite, hold(member_id, "h-1", 30))
    assert await remaining(db, member_id, a, b) == [0, 2]
    back = await released(suite, release(member_id, "h-1", "r-1"))
    assert (back.state, back.captured_points) == (pb.HOLD_STATE_RELEASED, 0)
    assert back.transaction != got.transaction
    assert await released(suite, release(member_id, "h-1", "r-1")) == back
    assert await remaining(db, member_id, a, b) == [12, 20]
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (32, 0)
    await refused(
        suite.points.ReleaseHold(release(member_id, "h-1", "r-2"), metadata=spender(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_HELD",
    )
    await refused(
        suite.points.CapturePoints(capture(member_id, "h-1", "c-1", 1), metadata=spender(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_HELD",
    )
    await ledger_holds(suite.dsn)


async def test_captures_above_the_hold_and_unknown_holds_are_refused(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, _, _ = await two_lots(suite, db)
    await held(suite, hold(member_id, "h-1", 10))
    await refused(
        suite.points.CapturePoints(capture(member_id, "h-1", "c-1", 11), metadata=spender(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CAPTURE_EXCEEDS_HOLD",
    )
    for call in (
        suite.points.CapturePoints(capture(member_id, "h-x", "c-2", 1), metadata=spender(suite)),
        suite.points.ReleaseHold(release(member_id, "h-x", "r-1"), metadata=spender(suite)),
    ):
        await expect_error(call, grpc.StatusCode.NOT_FOUND)
    # the refused capture did not use up its id
    assert (await captured(suite, capture(member_id, "h-1", "c-1", 10))).captured_points == 10
    await ledger_holds(suite.dsn)


async def test_bad_spending_requests_are_invalid_arguments(suite: Suite) -> None:
    member_id = await known_member(suite)
    cases = [
        (suite.points.HoldPoints, hold(member_id, "h-1", 0), "points"),
        (suite.points.HoldPoints, hold(member_id, "", 1), "hold_id"),
        (suite.points.HoldPoints, hold(member_id, "a/b", 1), "hold_id"),
        (suite.points.HoldPoints, hold("x/y", "h-1", 1), "member"),
        (suite.points.CapturePoints, capture(member_id, "h-1", "c-1", -1), "points"),
        (suite.points.CapturePoints, capture(member_id, "h-1", "", 1), "capture_id"),
        (
            suite.points.CapturePoints,
            pb.CapturePointsRequest(name="holds/1", capture_id="c", points=1),
            "name",
        ),
        (suite.points.ReleaseHold, release(member_id, "h-1", ""), "request_id"),
        (suite.points.RedeemPoints, redeem(member_id, "r-1", 10**13), "points"),
        (suite.points.RedeemPoints, redeem(member_id, "", 1), "request_id"),
    ]
    for method, request, field in cases:
        await expect_error(
            method(request, metadata=spender(suite)),
            grpc.StatusCode.INVALID_ARGUMENT,
            fields={field},
        )


async def test_a_hold_expires_by_itself_through_the_job(
    suite: Suite, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    member_id, a, b = await two_lots(suite, db)
    got = await held(suite, hold(member_id, "h-1", 15))
    expires = got.expire_time.ToDatetime(tzinfo=UTC)
    runner = JobRunner(pool)
    before = await runner.run_once(expires - timedelta(seconds=1))
    assert done(before)["hold_expiry"] == 0
    assert done(await runner.run_once(expires))["hold_expiry"] == 1
    assert done(await runner.run_once(expires))["hold_expiry"] == 0  # idempotent
    assert await remaining(db, member_id, a, b) == [12, 20]
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (32, 0)
    row = await db.fetchrow(
        "SELECT h.state, t.idempotency_key, t.kind FROM points.holds h JOIN points.transactions t"
        " ON t.member_id = h.member_id AND t.txn_id = h.last_txn_id WHERE h.member_id = $1",
        member_id,
    )
    assert row is not None
    assert tuple(row) == ("EXPIRED", "hold_expiry:h-1", "hold_expiry")
    await refused(
        suite.points.CapturePoints(capture(member_id, "h-1", "c-1", 1), metadata=spender(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "HOLD_NOT_HELD",
    )
    await ledger_holds(suite.dsn)


def done(reports: list[JobReport]) -> dict[str, int]:
    return {r.job: r.done for r in reports}


async def test_points_given_back_to_a_lot_that_expired_meanwhile_expire_at_once(
    suite: Suite, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    member_id, a, b = await two_lots(suite, db)
    got = await held(suite, hold(member_id, "h-1", 15))  # 12 from lot a, 3 from lot b
    lot_a_expiry = await db.fetchval(
        "SELECT expires_at FROM points.lots WHERE member_id = $1 AND lot_id = $2", member_id, a
    )
    assert lot_a_expiry > got.expire_time.ToDatetime(tzinfo=UTC)
    assert done(await JobRunner(pool).run_once(lot_a_expiry))["hold_expiry"] == 1
    expiry = await db.fetchval(
        "SELECT last_txn_id FROM points.holds WHERE member_id = $1", member_id
    )
    # the lot that expired during the hold forfeits its part; the other lot gets its back
    assert sorted(await moves(db, member_id, f"x/{expiry}"), key=lambda m: m[3] == b) == [
        ("member:held", "program:expired", 12, a),
        ("member:held", "member:available", 3, b),
    ]
    assert await remaining(db, member_id, a, b) == [0, 20]
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (20, 0)
    await ledger_holds(suite.dsn)


async def test_redeem_takes_the_soonest_expiring_lot_first(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, a, b = await two_lots(suite, db)
    got = await redeemed(suite, redeem(member_id, "r-1", 15))
    assert (got.name, got.points) == (f"members/{member_id}/redemptions/r-1", 15)
    assert [lot.points for lot in got.lots] == [12, 3]
    assert got.lots[0].expire_time.ToDatetime() < got.lots[1].expire_time.ToDatetime()
    assert await moves(db, member_id, got.transaction) == [
        ("member:available", "program:redeemed", 12, a),
        ("member:available", "program:redeemed", 3, b),
    ]
    assert await redeemed(suite, redeem(member_id, "r-1", 15)) == got
    await refused(
        suite.points.RedeemPoints(redeem(member_id, "r-1", 16), metadata=spender(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (17, 0)
    version = await db.fetchval(
        "SELECT DISTINCT rule_version FROM points.transfers WHERE member_id = $1 AND txn_id = $2",
        member_id,
        int(got.transaction.rsplit("/", 1)[1]),
    )
    assert version == got.rule_version
    await ledger_holds(suite.dsn)


async def test_spending_more_than_available_writes_nothing(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, a, b = await two_lots(suite, db)
    # pending points (in the return window) cannot be spent
    await suite.points.SettlePayment(payment(member_id, "p-new", 5000), metadata=settler(suite))
    before = await balance(suite, member_id)
    for call in (
        suite.points.RedeemPoints(redeem(member_id, "r-1", 33), metadata=spender(suite)),
        suite.points.HoldPoints(hold(member_id, "h-1", 33), metadata=spender(suite)),
    ):
        await refused(call, grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")
    assert await balance(suite, member_id) == before
    assert await remaining(db, member_id, a, b) == [12, 20]
    spent = await db.fetchval(
        "SELECT count(*) FROM points.transactions WHERE member_id = $1"
        " AND kind IN ('hold', 'redemption')",
        member_id,
    )
    assert spent == 0
    # the refused keys were not used up
    assert (await redeemed(suite, redeem(member_id, "r-1", 32))).points == 32
    await ledger_holds(suite.dsn)


async def test_a_frozen_member_cannot_spend_but_holds_can_be_released(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, _, _ = await two_lots(suite, db)
    await held(suite, hold(member_id, "h-1", 5))
    frozen = pb.MemberEvent(
        event_id=2,
        member=f"members/{member_id}",
        type=pb.MEMBER_EVENT_TYPE_STATUS_CHANGED,
        state=pb.MEMBER_STATE_FROZEN,
        event_time=ts(NOW),
    )
    await suite.points.ApplyMemberEvents(
        pb.ApplyMemberEventsRequest(events=[frozen]), metadata=suite.auth("service:accounts")
    )
    for call in (
        suite.points.RedeemPoints(redeem(member_id, "r-1", 1), metadata=spender(suite)),
        suite.points.HoldPoints(hold(member_id, "h-2", 1), metadata=spender(suite)),
        suite.points.CapturePoints(capture(member_id, "h-1", "c-1", 5), metadata=spender(suite)),
    ):
        await refused(call, grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_FROZEN")
    back = await released(suite, release(member_id, "h-1", "r-1"))
    assert back.state == pb.HOLD_STATE_RELEASED
    assert (await balance(suite, member_id)).available == 32
    await ledger_holds(suite.dsn)


@pytest.fixture
async def roomy(suite: Suite) -> AsyncIterator[list[Stub]]:
    """A second points service that admits 1000 calls at once, and 4 connections to it
    (a connection carries at most 256 streams): all 500 calls reach the ledger, none is
    turned away by the server's overload protection."""
    settings = dataclasses.replace(suite.settings, max_concurrent_rpcs=1000, db_pool_max=20)
    service = await start_service(POINTS, settings, "127.0.0.1:0")
    target = f"127.0.0.1:{service.port}"
    # a local subchannel pool: channels to one target would otherwise share one connection
    own = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=own) for _ in range(4)]
    try:
        yield [Stub(channel) for channel in channels]
    finally:
        for channel in channels:
            await channel.close()
        await service.stop(0.2)


async def test_500_concurrent_redemptions_of_a_balance_of_50_succeed_50_times(
    suite: Suite, db: asyncpg.Connection, roomy: list[Stub]
) -> None:
    member_id = await known_member(suite)
    await earned(suite, member_id, "p-50", 2500, OLDER)
    assert (await balance(suite, member_id)).available == 50
    calls = [
        roomy[i % 4].RedeemPoints(redeem(member_id, f"r-{i}", 1), metadata=spender(suite))
        for i in range(500)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.Redemption)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 50
    assert len(failed) == 450
    reasons = {(e.code, e.reason) for e in map(parse_rpc_error, failed)}
    assert reasons == {(grpc.StatusCode.FAILED_PRECONDITION, "INSUFFICIENT_POINTS")}
    now = await balance(suite, member_id)
    assert (now.available, now.held) == (0, 0)
    lowest = await db.fetchval(
        "SELECT min(remaining) FROM points.lots WHERE member_id = $1", member_id
    )
    assert lowest == 0
    await ledger_holds(suite.dsn)
