"""SettlePayment, SettlePayments and GetBalance against the default program rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from itertools import count

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb

from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

_ids = count(1)
NOW = datetime.now(UTC)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


async def known_member(
    suite: Suite, state: pb.MemberState.ValueType = pb.MEMBER_STATE_ACTIVE
) -> str:
    """A member as the accounts outbox would announce it; returns its id."""
    member_id = f"mpts{next(_ids):06d}"
    await announce(suite, member_id, state)
    return member_id


async def announce(
    suite: Suite,
    member_id: str,
    state: pb.MemberState.ValueType = pb.MEMBER_STATE_ACTIVE,
    referred_by: str = "",
) -> None:
    """What the accounts outbox relay delivers to points for a new member."""
    event = pb.MemberEvent(
        event_id=1,
        member=f"members/{member_id}",
        type=pb.MEMBER_EVENT_TYPE_REGISTERED,
        state=state,
        event_time=ts(NOW),
        referred_by=f"members/{referred_by}" if referred_by else "",
    )
    await suite.points.ApplyMemberEvents(
        pb.ApplyMemberEventsRequest(events=[event]), metadata=suite.auth("service:accounts")
    )


def payment(
    member_id: str,
    payment_id: str,
    amount_minor: int = 1234,
    category: str = "dining",
    currency: str = "CNY",
    occurred: datetime = NOW,
) -> pb.SettlePaymentRequest:
    return pb.SettlePaymentRequest(
        member=f"members/{member_id}",
        payment_id=payment_id,
        amount=pb.Money(currency_code=currency, amount_minor=amount_minor),
        merchant_id="merchant-1",
        merchant_category=category,
        occur_time=ts(occurred),
        channel="app",
    )


def settler(suite: Suite) -> Metadata:
    return suite.auth("settlement")


async def balance(suite: Suite, member_id: str) -> pb.Balance:
    got: pb.Balance = await suite.points.GetBalance(
        pb.GetBalanceRequest(name=f"members/{member_id}/balance"), metadata=suite.auth("officer")
    )
    return got


async def ledger_holds(dsn: str) -> None:
    """Every balance equals the sum of its transfers; lots sum to what they back.

    Debt (allow_negative refunds) is `max(0, -available)`; while a member owes points no
    available lot holds any: available + debt == sum(remaining of AVAILABLE lots).
    Held points are the points of the open (HELD) holds.
    """
    conn = await asyncpg.connect(dsn)
    try:
        mismatched = await conn.fetch(
            """
            WITH moved AS (
              SELECT member_id, account, sum(delta) AS total FROM (
                SELECT member_id, to_account AS account, amount AS delta FROM points.transfers
                UNION ALL
                SELECT member_id, from_account, -amount FROM points.transfers) t
              WHERE account LIKE 'member:%' GROUP BY member_id, account)
            SELECT b.member_id FROM points.balances b
            WHERE b.available <> COALESCE((SELECT total FROM moved m WHERE m.member_id =
                    b.member_id AND m.account = 'member:available'), 0)
               OR b.pending <> COALESCE((SELECT total FROM moved m WHERE m.member_id =
                    b.member_id AND m.account = 'member:pending'), 0)
               OR b.pending <> COALESCE((SELECT sum(remaining) FROM points.lots l WHERE
                    l.member_id = b.member_id AND l.state = 'PENDING'), 0)
               OR b.available + GREATEST(0, -b.available) <> COALESCE((SELECT sum(remaining)
                    FROM points.lots l WHERE l.member_id = b.member_id
                    AND l.state = 'AVAILABLE'), 0)
               OR b.held <> COALESCE((SELECT total FROM moved m WHERE m.member_id =
                    b.member_id AND m.account = 'member:held'), 0)
               OR b.held <> COALESCE((SELECT sum(points) FROM points.holds h WHERE
                    h.member_id = b.member_id AND h.state = 'HELD'), 0)
               OR b.available < b.available_floor
            """
        )
        assert [r["member_id"] for r in mismatched] == []
    finally:
        await conn.close()


async def test_a_payment_settles_into_pending_points(suite: Suite) -> None:
    member_id = await known_member(suite)
    settled = await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    # 12.34 CNY at 1 point per CNY, dining 2x, base tier 1x: floor(24.68) = 24
    assert settled.points == 24
    assert settled.state == pb.POINTS_STATE_PENDING
    assert settled.tier_multiplier_bps == 10000
    assert settled.rule_version >= 1
    assert settled.name == f"members/{member_id}/settlements/p-1"
    assert settled.transaction.startswith(f"members/{member_id}/transactions/")
    available = settled.available_time.ToDatetime(tzinfo=UTC)
    assert abs(available - (NOW + timedelta(days=7))) < timedelta(seconds=1)
    assert settled.expire_time.ToDatetime(tzinfo=UTC) > NOW + timedelta(days=300)
    got = await balance(suite, member_id)
    assert (got.available, got.pending, got.held, got.lifetime_earned) == (0, 24, 0, 24)
    await ledger_holds(suite.dsn)


async def test_a_payment_past_its_return_window_is_available_at_once(suite: Suite) -> None:
    member_id = await known_member(suite)
    old = NOW - timedelta(days=10)
    settled = await suite.points.SettlePayment(
        payment(member_id, "p-old", 10_000, "supermarket", occurred=old), metadata=settler(suite)
    )
    assert settled.state == pb.POINTS_STATE_AVAILABLE
    got = await balance(suite, member_id)
    assert (got.available, got.pending) == (settled.points, 0)
    assert [e.points for e in got.expiring] == [settled.points]
    await ledger_holds(suite.dsn)


async def test_a_repeat_returns_the_first_result_and_credits_once(suite: Suite) -> None:
    member_id = await known_member(suite)
    first = await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    again = await suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite))
    assert again == first
    assert (await balance(suite, member_id)).pending == first.points
    await expect_error(
        suite.points.SettlePayment(payment(member_id, "p-1", 999), metadata=settler(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )


async def test_concurrent_duplicates_credit_once(suite: Suite) -> None:
    member_id = await known_member(suite)
    calls = [
        suite.points.SettlePayment(payment(member_id, "p-dup"), metadata=settler(suite))
        for _ in range(20)
    ]
    results = await asyncio.gather(*calls)
    assert len({r.transaction for r in results}) == 1
    assert (await balance(suite, member_id)).pending == results[0].points
    await ledger_holds(suite.dsn)


async def test_categories_that_never_earn_are_recorded_with_no_points(suite: Suite) -> None:
    member_id = await known_member(suite)
    settled = await suite.points.SettlePayment(
        payment(member_id, "p-top", 50_000, "top_up"), metadata=settler(suite)
    )
    assert (settled.points, settled.state, settled.transaction) == (0, pb.POINTS_STATE_NONE, "")
    again = await suite.points.SettlePayment(
        payment(member_id, "p-top", 50_000, "top_up"), metadata=settler(suite)
    )
    assert again == settled
    assert (await balance(suite, member_id)).lifetime_earned == 0


async def test_caps_per_payment_and_per_day(suite: Suite) -> None:
    member_id = await known_member(suite)
    # 10,000 CNY of travel would be 30,000 points: capped at 5,000 per payment
    big = await suite.points.SettlePayment(
        payment(member_id, "p-big", 1_000_000, "travel"), metadata=settler(suite)
    )
    assert big.points == 5000
    for i in range(3):
        await suite.points.SettlePayment(
            payment(member_id, f"p-more-{i}", 1_000_000, "travel"), metadata=settler(suite)
        )
    # the daily cap (20,000) leaves nothing for a fifth payment the same day
    last = await suite.points.SettlePayment(
        payment(member_id, "p-last", 1_000_000, "travel"), metadata=settler(suite)
    )
    assert (last.points, last.state) == (0, pb.POINTS_STATE_NONE)
    assert (await balance(suite, member_id)).lifetime_earned == 20_000


async def test_bad_input_is_invalid_argument_and_writes_nothing(suite: Suite) -> None:
    member_id = await known_member(suite)
    cases = {
        "amount.amount_minor": [
            payment(member_id, "b1", 0),
            payment(member_id, "b2", -5),
            payment(member_id, "b3", 10**18),
        ],
        "amount.currency_code": [
            payment(member_id, "b4", currency="cny"),
            payment(member_id, "b5", currency="XXX"),
        ],
        "merchant_category": [payment(member_id, "b6", category="")],
        "occur_time": [payment(member_id, "b7", occurred=NOW + timedelta(days=1))],
        "member": [payment("not/a/member", "b8")],
        "payment_id": [payment(member_id, "")],
    }
    for field, requests in cases.items():
        for request in requests:
            await expect_error(
                suite.points.SettlePayment(request, metadata=settler(suite)),
                grpc.StatusCode.INVALID_ARGUMENT,
                fields={field},
            )
    got = await balance(suite, member_id)
    assert (got.pending, got.lifetime_earned) == (0, 0)


async def test_members_who_may_not_earn(suite: Suite) -> None:
    for state, reason in [
        (pb.MEMBER_STATE_FROZEN, "MEMBER_FROZEN"),
        (pb.MEMBER_STATE_CLOSED, "MEMBER_CLOSED"),
        (pb.MEMBER_STATE_ERASED, "MEMBER_ERASED"),
    ]:
        member_id = await known_member(suite, state)
        await expect_error(
            suite.points.SettlePayment(payment(member_id, "p-1"), metadata=settler(suite)),
            grpc.StatusCode.FAILED_PRECONDITION,
            reason=reason,
        )
    await expect_error(
        suite.points.SettlePayment(payment("munknown", "p-1"), metadata=settler(suite)),
        grpc.StatusCode.UNAVAILABLE,
        reason="MEMBER_UNKNOWN",
    )


async def test_a_batch_settles_each_item_on_its_own(suite: Suite) -> None:
    good, frozen = await known_member(suite), await known_member(suite, pb.MEMBER_STATE_FROZEN)
    requests = [
        payment(good, "b-1"),
        payment(good, "b-2", 0),  # invalid
        payment(frozen, "b-3"),
        payment(good, "b-1"),  # a repeat within the batch
        payment(good, "b-4", 10_000, "supermarket"),
    ]
    response = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    codes = [r.error_code for r in response.results]
    assert codes == [0, 3, 9, 0, 0]  # OK, INVALID_ARGUMENT, FAILED_PRECONDITION
    assert response.results[2].error_reason == "MEMBER_FROZEN"
    assert response.results[3].settlement == response.results[0].settlement
    expected = response.results[0].settlement.points + response.results[4].settlement.points
    assert (await balance(suite, good)).pending == expected
    await ledger_holds(suite.dsn)


async def test_batch_size_is_bounded(suite: Suite) -> None:
    member_id = await known_member(suite)
    await expect_error(
        suite.points.SettlePayments(pb.SettlePaymentsRequest(), metadata=settler(suite)),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"requests"},
    )
    too_many = [payment(member_id, f"x-{i}") for i in range(501)]
    await expect_error(
        suite.points.SettlePayments(
            pb.SettlePaymentsRequest(requests=too_many), metadata=settler(suite)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"requests"},
    )


async def test_balance_of_unknown_member_and_bad_names(suite: Suite) -> None:
    await expect_error(
        suite.points.GetBalance(
            pb.GetBalanceRequest(name="members/mnobody/balance"), metadata=suite.auth("officer")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    for name in ["members/x", "balance", "members//balance", "members/a b/balance"]:
        await expect_error(
            suite.points.GetBalance(
                pb.GetBalanceRequest(name=name), metadata=suite.auth("officer")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            fields={"name"},
        )
