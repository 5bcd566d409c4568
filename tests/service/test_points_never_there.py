"""Points that were never really there: payments too old to settle, expired lots a balance
still counted, held points that escaped a refund, spent lots that never closed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.jobs import JobRunner
from tests.service.test_points_refunds import OLD, lot_of, refund, refunded, settle
from tests.service.test_points_settlement import (
    NOW,
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
)
from tests.service.test_points_spending import (
    capture,
    captured,
    held,
    hold,
    redeem,
    redeemed,
    refused,
    release,
    released,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

FAILED = grpc.StatusCode.FAILED_PRECONDITION


async def reconciles(suite: Suite) -> None:
    report = await suite.points.Reconcile(pb.ReconcileRequest(), metadata=suite.auth("admin"))
    assert report.ok, report.violations
    await ledger_holds(suite.dsn)


# ---- how late a payment may settle ------------------------------------------------------


async def test_a_payment_older_than_the_settlement_delay_is_refused_naming_the_field(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    far_past = datetime(1, 1, 2, tzinfo=UTC)  # before the zone's history: local mean time
    for occurred in (far_past, NOW - timedelta(days=3 * 365), NOW - timedelta(days=91)):
        await expect_error(
            suite.points.SettlePayment(
                payment(member_id, "p-old", occurred=occurred), metadata=settler(suite)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            fields={"occur_time"},
        )
    batch = pb.SettlePaymentsRequest(
        requests=[payment(member_id, "p-far", occurred=far_past), payment(member_id, "p-ok")]
    )
    got = await suite.points.SettlePayments(batch, metadata=settler(suite))
    assert [r.error_reason for r in got.results] == ["INVALID_ARGUMENT", ""]
    assert "occur_time" in got.results[0].error_message
    assert (
        await db.fetchval("SELECT count(*) FROM points.lots WHERE member_id = $1", member_id) == 1
    )
    # within the rule: settles, and its lot expires in the future
    late = await settle(
        suite.points, suite, payment(member_id, "p-late", occurred=NOW - timedelta(days=89))
    )
    assert late.state == pb.POINTS_STATE_AVAILABLE
    assert late.expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC)


# ---- a balance never counts an expired lot ------------------------------------------------


async def lot_expired_unseen(
    db: asyncpg.Connection, member_id: str, settled: pb.Settlement
) -> None:
    """The lot's expiry passes while the expiry job has not run yet."""
    await db.execute(
        "UPDATE points.lots SET expires_at = now() - interval '1 hour'"
        " WHERE member_id = $1 AND lot_id = $2",
        member_id,
        (await lot_of(db, member_id, settled))["lot_id"],
    )


async def test_an_expired_lot_is_not_counted_before_the_expiry_job_runs(
    suite: Suite, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    member_id = await known_member(suite)
    first = await settle(suite.points, suite, payment(member_id, "p-1", 1000, occurred=OLD))
    second = await settle(suite.points, suite, payment(member_id, "p-2", 1500, occurred=OLD))
    assert (first.points, second.points) == (20, 30)
    await lot_expired_unseen(db, member_id, first)
    got = await balance(suite, member_id)
    assert got.available == 30
    assert [e.points for e in got.expiring] == [30]
    assert all(e.expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) for e in got.expiring)
    await refused(
        suite.points.RedeemPoints(redeem(member_id, "r-1", 31), metadata=suite.auth("admin")),
        FAILED,
        "INSUFFICIENT_POINTS",
    )
    # a refund takes nothing from the expired lot: it is written off instead
    back = await refunded(suite.points, suite, refund(member_id, "p-1", "f-1", 1000))
    assert (back.points_clawed_back, back.points_uncollectable) == (20, 0)
    assert (await balance(suite, member_id)).available == 10  # 20 from the other lot
    await JobRunner(pool).run_once(datetime.now(UTC))
    assert (await balance(suite, member_id)).available == 10
    await reconciles(suite)


# ---- held points do not escape a refund ---------------------------------------------------


async def hundred_points(suite: Suite, member_id: str, payment_id: str) -> pb.Settlement:
    got = await settle(suite.points, suite, payment(member_id, payment_id, 5000, occurred=OLD))
    assert (got.points, got.state) == (100, pb.POINTS_STATE_AVAILABLE)
    return got


async def test_a_full_refund_takes_back_held_points_before_writing_anything_off(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    await hundred_points(suite, member_id, "p-1")
    assert (await held(suite, hold(member_id, "h-1", 80))).points == 80
    back = await refunded(suite.points, suite, refund(member_id, "p-1", "f-1", 5000))
    assert (back.points_clawed_back, back.points_uncollectable) == (100, 0)
    assert back.points_clawed_back_from_holds == 80
    got = await balance(suite, member_id)
    assert (got.available, got.held) == (0, 0)
    # the hold is closed: nothing comes back to the member
    await refused(
        suite.points.ReleaseHold(release(member_id, "h-1", "l-1"), metadata=suite.auth("admin")),
        FAILED,
        "HOLD_NOT_HELD",
    )
    await refused(
        suite.points.CapturePoints(
            capture(member_id, "h-1", "c-1", 1), metadata=suite.auth("admin")
        ),
        FAILED,
        "HOLD_NOT_HELD",
    )
    state = await db.fetchrow(
        "SELECT state, points, clawed_back_points FROM points.holds WHERE member_id = $1",
        member_id,
    )
    assert state is not None and tuple(state) == ("CLAWED_BACK", 0, 80)
    assert (await balance(suite, member_id)).available == 0
    await reconciles(suite)


async def test_a_partial_refund_leaves_a_smaller_hold(suite: Suite) -> None:
    member_id = await known_member(suite)
    await hundred_points(suite, member_id, "p-1")
    await held(suite, hold(member_id, "h-1", 80))
    back = await refunded(suite.points, suite, refund(member_id, "p-1", "f-1", 2500))
    # 50 points: the 20 left in the lot, then 30 of the hold
    assert (back.points_clawed_back, back.points_clawed_back_from_holds) == (50, 30)
    await refused(
        suite.points.CapturePoints(
            capture(member_id, "h-1", "c-1", 80), metadata=suite.auth("admin")
        ),
        FAILED,
        "CAPTURE_EXCEEDS_HOLD",
    )
    got = await captured(suite, capture(member_id, "h-1", "c-2", 50))
    assert (got.state, got.captured_points, got.points_clawed_back) == (
        pb.HOLD_STATE_CAPTURED,
        50,
        30,
    )
    got_balance = await balance(suite, member_id)
    assert (got_balance.available, got_balance.held) == (0, 0)
    await reconciles(suite)


async def test_holding_everything_before_a_refund_shields_nothing(suite: Suite) -> None:
    """Hold all points, refund one payment, release: only the other payment's points come
    back."""
    member_id = await known_member(suite)
    await hundred_points(suite, member_id, "p-a")
    await hundred_points(suite, member_id, "p-b")
    await held(suite, hold(member_id, "h-all", 200))
    back = await refunded(suite.points, suite, refund(member_id, "p-a", "f-a", 5000))
    assert (back.points_clawed_back, back.points_uncollectable) == (100, 0)
    assert back.points_clawed_back_from_holds == 100
    after = await released(suite, release(member_id, "h-all", "l-1"))
    assert (after.state, after.points, after.points_clawed_back) == (
        pb.HOLD_STATE_RELEASED,
        100,
        100,
    )
    got = await balance(suite, member_id)
    assert (got.available, got.held) == (100, 0)
    await reconciles(suite)


async def test_a_refund_takes_available_points_before_another_payments_hold(
    suite: Suite,
) -> None:
    """A redemption in progress of other points is disturbed only when nothing else is
    left: the member's available lots pay first."""
    member_id = await known_member(suite)
    await hundred_points(suite, member_id, "p-a")
    await redeemed(suite, redeem(member_id, "r-a", 100))  # p-a's own points are spent
    await hundred_points(suite, member_id, "p-b")
    await hundred_points(suite, member_id, "p-c")
    await held(suite, hold(member_id, "h-b", 100))  # p-b's lot expires first: held
    back = await refunded(suite.points, suite, refund(member_id, "p-a", "f-a", 5000))
    assert (back.points_clawed_back, back.points_clawed_back_from_holds) == (100, 0)
    got = await balance(suite, member_id)
    assert (got.available, got.held) == (0, 100)
    await reconciles(suite)


# ---- lots with nothing left close at their expiry ---------------------------------------


async def test_spent_and_held_lots_close_at_their_expiry(
    suite: Suite, db: asyncpg.Connection, pool: asyncpg.Pool
) -> None:
    member_id = await known_member(suite)
    spent = await hundred_points(suite, member_id, "p-spent")
    await redeemed(suite, redeem(member_id, "r-1", 100))
    kept = await hundred_points(suite, member_id, "p-held")
    await held(suite, hold(member_id, "h-1", 100))
    for settled in (spent, kept):
        await lot_expired_unseen(db, member_id, settled)
    await JobRunner(pool).run_once(datetime.now(UTC))
    states = [
        ((lot := await lot_of(db, member_id, s))["state"], lot["remaining"]) for s in (spent, kept)
    ]
    assert states == [("EXPIRED", 0), ("EXPIRED", 0)]
    # the held points can still be captured; released, they expire with their lot
    back = await released(suite, release(member_id, "h-1", "l-1"))
    assert back.state == pb.HOLD_STATE_RELEASED
    got = await balance(suite, member_id)
    assert (got.available, got.held) == (0, 0)
    await reconciles(suite)
