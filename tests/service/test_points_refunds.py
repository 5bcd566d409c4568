"""RefundPayment: rounding, lots clawed from, both policies, debt, idempotency, races."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import count
from pathlib import Path

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points.domain import clawback
from tests.service.test_points_settlement import (
    NOW,
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
)
from tests.support.points import points_with_rules, rules_file
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

Stub = pb_grpc.PointsServiceStub
_spends = count(1)
OLD = NOW - timedelta(days=10)  # past the default 7-day return window: available at once


def refund(
    member_id: str, payment_id: str, refund_id: str, amount_minor: int, currency: str = "CNY"
) -> pb.RefundPaymentRequest:
    return pb.RefundPaymentRequest(
        member=f"members/{member_id}",
        payment_id=payment_id,
        refund_id=refund_id,
        amount=pb.Money(currency_code=currency, amount_minor=amount_minor),
        reason="returned goods",
    )


@pytest.fixture
async def lenient(suite: Suite, tmp_path: Path) -> AsyncIterator[Stub]:
    """A second points service on the database: allow_negative to -1000, no return window."""
    path = rules_file(
        tmp_path, refund_policy='"allow_negative"', negative_floor="1000", pending_days="0"
    )
    async with points_with_rules(suite, path) as stub:
        yield stub


async def settle(stub: Stub, suite: Suite, request: pb.SettlePaymentRequest) -> pb.Settlement:
    settled: pb.Settlement = await stub.SettlePayment(request, metadata=settler(suite))
    return settled


async def refunded(stub: Stub, suite: Suite, request: pb.RefundPaymentRequest) -> pb.Refund:
    got: pb.Refund = await stub.RefundPayment(request, metadata=settler(suite))
    return got


def txn_id(name: str) -> int:
    return int(name.rsplit("/", 1)[1])


async def lot_of(db: asyncpg.Connection, member_id: str, settled: pb.Settlement) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT lot_id, state, points, remaining FROM points.lots"
        " WHERE member_id = $1 AND txn_id = $2",
        member_id,
        txn_id(settled.transaction),
    )
    assert row is not None
    return row


async def spend(suite: Suite, member_id: str, points: int) -> None:
    """A redemption: points leave the member's lots, soonest-expiring first."""
    request = pb.RedeemPointsRequest(
        member=f"members/{member_id}", request_id=f"spend-{next(_spends)}", points=points
    )
    await suite.points.RedeemPoints(request, metadata=suite.auth("wallet-backend"))


async def test_a_full_refund_in_the_return_window_cancels_the_lot(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite.points, suite, payment(member_id, "p-1", 1234))
    assert (settled.points, settled.state) == (24, pb.POINTS_STATE_PENDING)
    got = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 1234))
    assert got.name == f"members/{member_id}/refunds/r-1"
    assert (got.points_clawed_back, got.points_uncollectable) == (24, 0)
    paid_back, left = got.refunded_total, got.remaining_refundable
    assert (paid_back.amount_minor, left.amount_minor, left.currency_code) == (1234, 0, "CNY")
    assert got.rule_version == settled.rule_version
    lot = await lot_of(db, member_id, settled)
    assert (lot["state"], lot["remaining"]) == ("CANCELLED", 0)
    now = await balance(suite, member_id)
    assert (now.pending, now.available) == (0, 0)
    stored = await db.fetchrow(
        "SELECT kind, idempotency_key, points, explanation FROM points.transactions"
        " WHERE member_id = $1 AND txn_id = $2",
        member_id,
        txn_id(got.transaction),
    )
    assert stored is not None
    assert (stored["kind"], stored["idempotency_key"], stored["points"]) == (
        "refund",
        "refund:r-1",
        -24,
    )
    assert "ceil(24 x 1234/1234) = 24" in stored["explanation"]
    await ledger_holds(suite.dsn)


async def test_partial_refunds_round_up_and_sum_to_the_full_clawback(suite: Suite) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite.points, suite, payment(member_id, "p-1", 1000))
    assert settled.points == 20
    taken = []
    for i, amount in enumerate([333, 333, 333, 1]):
        got = await refunded(suite.points, suite, refund(member_id, "p-1", f"r-{i}", amount))
        taken.append(got.points_clawed_back)
    # ceil(6.66) = 7, then ceil(13.32) - 7 = 7, ceil(19.98) - 14 = 6, 20 - 20 = 0
    assert taken == [7, 7, 6, 0]
    assert (await balance(suite, member_id)).pending == 0
    small = await settle(suite.points, suite, payment(member_id, "p-2", 100, "retail"))
    assert small.points == 1
    thirds = [
        (
            await refunded(suite.points, suite, refund(member_id, "p-2", f"s-{i}", a))
        ).points_clawed_back
        for i, a in enumerate([33, 33, 34])
    ]
    assert thirds == [1, 0, 0]  # one point refunded in thirds is taken by the first third
    # a payment that earned nothing is refunded too, and claws back nothing
    await settle(suite.points, suite, payment(member_id, "p-3", 5000, "top_up"))
    none = await refunded(suite.points, suite, refund(member_id, "p-3", "t-1", 5000))
    assert (none.points_clawed_back, none.remaining_refundable.amount_minor) == (0, 0)
    await ledger_holds(suite.dsn)


async def test_refunds_above_what_is_left_write_nothing(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    await settle(suite.points, suite, payment(member_id, "p-1", 1000))
    await expect_error(
        suite.points.RefundPayment(refund(member_id, "p-1", "r-0", 1001), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="REFUND_EXCEEDS_PAYMENT",
    )
    first = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 600))
    assert first.remaining_refundable.amount_minor == 400
    before = await balance(suite, member_id)
    await expect_error(
        suite.points.RefundPayment(refund(member_id, "p-1", "r-2", 401), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="REFUND_EXCEEDS_PAYMENT",
    )
    assert await balance(suite, member_id) == before
    keys = await db.fetch(
        "SELECT idempotency_key FROM points.transactions WHERE member_id = $1 AND kind = 'refund'",
        member_id,
    )
    assert [k["idempotency_key"] for k in keys] == ["refund:r-1"]
    last = await refunded(suite.points, suite, refund(member_id, "p-1", "r-2", 400))
    assert (last.refunded_total.amount_minor, last.remaining_refundable.amount_minor) == (1000, 0)
    assert first.points_clawed_back + last.points_clawed_back == 20
    await ledger_holds(suite.dsn)


async def test_a_refund_happens_exactly_once_per_refund_id(suite: Suite) -> None:
    member_id = await known_member(suite)
    await settle(suite.points, suite, payment(member_id, "p-1", 1000))
    await settle(suite.points, suite, payment(member_id, "p-2", 1000))
    first = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 500))
    again = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 500))
    assert again == first
    assert (await balance(suite, member_id)).pending == 40 - first.points_clawed_back
    for reused in [refund(member_id, "p-1", "r-1", 501), refund(member_id, "p-2", "r-1", 500)]:
        await expect_error(
            suite.points.RefundPayment(reused, metadata=settler(suite)),
            grpc.StatusCode.ALREADY_EXISTS,
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    await ledger_holds(suite.dsn)


async def test_bad_refunds_are_clear_errors(suite: Suite) -> None:
    member_id = await known_member(suite)
    await settle(suite.points, suite, payment(member_id, "p-1", 1000))
    await expect_error(
        suite.points.RefundPayment(refund(member_id, "p-x", "r-1", 10), metadata=settler(suite)),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        suite.points.RefundPayment(refund("mnobody", "p-1", "r-1", 10), metadata=settler(suite)),
        grpc.StatusCode.UNAVAILABLE,  # a member accounts has not announced yet: retry
        reason="MEMBER_UNKNOWN",
    )
    cases = {
        "amount.currency_code": [
            refund(member_id, "p-1", "r-1", 10, "HKD"),  # not the payment's currency
            refund(member_id, "p-1", "r-1", 10, "cny"),
        ],
        "amount.amount_minor": [
            refund(member_id, "p-1", "r-1", 0),
            refund(member_id, "p-1", "r-1", -5),
            refund(member_id, "p-1", "r-1", 2**63 - 1),
        ],
        "member": [refund("not/a/member", "p-1", "r-1", 10)],
        "payment_id": [refund(member_id, "", "r-1", 10)],
        "refund_id": [refund(member_id, "p-1", "", 10)],
    }
    for field, requests in cases.items():
        for request in requests:
            await expect_error(
                suite.points.RefundPayment(request, metadata=settler(suite)),
                grpc.StatusCode.INVALID_ARGUMENT,
                fields={field},
            )
    assert (await balance(suite, member_id)).pending == 20
    # and none of them used up the refund id
    got = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 1000))
    assert got.points_clawed_back == 20
    await ledger_holds(suite.dsn)


async def test_concurrent_partial_refunds_never_exceed_the_payment(suite: Suite) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite.points, suite, payment(member_id, "p-1", 1000))
    calls = [
        suite.points.RefundPayment(refund(member_id, "p-1", f"r-{i}", 150), metadata=settler(suite))
        for i in range(10)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    done = [r for r in results if isinstance(r, pb.Refund)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(done) == 6  # 6 x 150 = 900; a seventh would exceed 1000
    assert {f.code() for f in failed} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert max(r.refunded_total.amount_minor for r in done) == 900
    clawed = sum(r.points_clawed_back for r in done)
    assert clawed == clawback.clawback_points(settled.points, 1000, 900)
    assert (await balance(suite, member_id)).pending == settled.points - clawed
    await ledger_holds(suite.dsn)


async def test_clawback_takes_its_own_lot_then_the_soonest_expiring(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    own = await settle(suite.points, suite, payment(member_id, "p-c", 1234, occurred=OLD))
    # the payment's own points were spent (redeemed while its lot was the only one)
    await spend(suite, member_id, 20)
    oldest = await settle(
        suite.points, suite, payment(member_id, "p-a", 600, occurred=NOW - timedelta(days=85))
    )
    middle = await settle(
        suite.points, suite, payment(member_id, "p-b", 1000, occurred=NOW - timedelta(days=40))
    )
    assert [s.points for s in (oldest, middle, own)] == [12, 20, 24]
    got = await refunded(suite.points, suite, refund(member_id, "p-c", "r-1", 1234))
    assert (got.points_clawed_back, got.points_uncollectable) == (24, 0)
    # 4 from its own lot, then 12 from the soonest-expiring lot, 8 from the next
    assert [(await lot_of(db, member_id, s))["remaining"] for s in (oldest, middle, own)] == [
        0,
        12,
        0,
    ]
    moved = await db.fetch(
        "SELECT lot_id, amount FROM points.transfers WHERE member_id = $1 AND txn_id = $2"
        " ORDER BY transfer_id",
        member_id,
        txn_id(got.transaction),
    )
    lots = [(await lot_of(db, member_id, s))["lot_id"] for s in (own, oldest, middle)]
    assert [(m["lot_id"], m["amount"]) for m in moved] == list(zip(lots, [4, 12, 8], strict=True))
    assert (await balance(suite, member_id)).available == 12
    await ledger_holds(suite.dsn)


async def test_within_balance_writes_off_what_the_member_no_longer_has(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    await settle(suite.points, suite, payment(member_id, "p-1", 1234, occurred=OLD))
    await spend(suite, member_id, 20)
    got = await refunded(suite.points, suite, refund(member_id, "p-1", "r-1", 1234))
    assert (got.points_clawed_back, got.points_uncollectable) == (4, 20)
    assert (await balance(suite, member_id)).available == 0
    written_off = await db.fetchval(
        "SELECT sum(amount) FROM points.transfers WHERE member_id = $1"
        " AND from_account = 'program:uncollectable' AND to_account = 'program:issued'",
        member_id,
    )
    assert written_off == 20
    await ledger_holds(suite.dsn)


async def test_allow_negative_goes_below_zero_and_later_earnings_repay(
    suite: Suite, lenient: Stub, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    first = await settle(lenient, suite, payment(member_id, "p-1", 1234))
    second = await settle(lenient, suite, payment(member_id, "p-2", 1000))
    assert (first.state, first.points, second.points) == (pb.POINTS_STATE_AVAILABLE, 24, 20)
    # the same expiry: lot order, so 24 from p-1's lot, then 16 from p-2's
    await spend(suite, member_id, 40)
    got = await refunded(lenient, suite, refund(member_id, "p-1", "r-1", 1234))
    assert (got.points_clawed_back, got.points_uncollectable) == (24, 0)  # 4 from p-2, 20 owed
    got = await refunded(lenient, suite, refund(member_id, "p-2", "r-2", 1000))
    assert (got.points_clawed_back, got.points_uncollectable) == (20, 0)
    assert (await balance(suite, member_id)).available == -40
    await ledger_holds(suite.dsn)
    # an available lot repays first: 30 points pay 30 of the 40 owed and keep nothing
    third = await settle(lenient, suite, payment(member_id, "p-3", 1500))
    assert (await lot_of(db, member_id, third))["remaining"] == 0
    assert (await balance(suite, member_id)).available == -10
    # a pending lot (default rules: 7-day window) repays too, from its pending points
    fourth = await settle(suite.points, suite, payment(member_id, "p-4", 1000))
    assert fourth.state == pb.POINTS_STATE_PENDING
    assert (await lot_of(db, member_id, fourth))["remaining"] == 10
    now = await balance(suite, member_id)
    assert (now.available, now.pending) == (0, 10)
    explanation = await db.fetchval(
        "SELECT explanation ->> 'debt_repaid' FROM points.transactions"
        " WHERE member_id = $1 AND idempotency_key = 'payment:p-4'",
        member_id,
    )
    assert explanation == "10"
    await ledger_holds(suite.dsn)


async def test_allow_negative_stops_at_the_floor(
    suite: Suite, lenient: Stub, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    big = await settle(lenient, suite, payment(member_id, "p-1", 300_000, "travel"))
    assert big.points == 5000  # the cap per payment
    await spend(suite, member_id, 5000)
    await expect_error(
        lenient.RefundPayment(refund(member_id, "p-1", "r-1", 300_000), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="NEGATIVE_LIMIT",
    )
    assert (await balance(suite, member_id)).available == 0
    got = await refunded(lenient, suite, refund(member_id, "p-1", "r-2", 60_000))
    assert got.points_clawed_back == 1000  # a fifth of 5000: exactly the floor
    assert (await balance(suite, member_id)).available == -1000
    await expect_error(
        lenient.RefundPayment(refund(member_id, "p-1", "r-3", 1), metadata=settler(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="NEGATIVE_LIMIT",
    )
    await ledger_holds(suite.dsn)
