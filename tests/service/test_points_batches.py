"""SettlePayments decides a batch set-wise: the same answers as one call per payment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.rpc import code_pb2
from membership.points.v1 import points_pb2 as pb

from services.points.domain.settlement import Payment, PointsState, SettlementResult
from tests.service.test_points_refunds import (
    Stub,
    refund,
    refunded,
    settle,
    spend,
)
from tests.service.test_points_settlement import (
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
)
from tests.support.points import points_with_rules, rules_file
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite


async def settle_batch(
    suite: Suite, requests: list[pb.SettlePaymentRequest]
) -> list[pb.SettlePaymentResult]:
    response = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    return list(response.results)


async def test_a_batch_answers_like_single_calls(suite: Suite) -> None:
    batched, single = await known_member(suite), await known_member(suite)
    specs = [(1234, "dining"), (50_000, "top_up"), (999, "travel"), (10_000, "supermarket")]
    results = await settle_batch(
        suite, [payment(batched, f"p-{i}", amount, cat) for i, (amount, cat) in enumerate(specs)]
    )
    for i, (amount, category) in enumerate(specs):
        one = await suite.points.SettlePayment(
            payment(single, f"p-{i}", amount, category), metadata=settler(suite)
        )
        got = results[i].settlement
        assert (got.points, got.state, got.rule_version) == (
            one.points,
            one.state,
            one.rule_version,
        )
        assert got.available_time == one.available_time and got.expire_time == one.expire_time
    assert (await balance(suite, batched)).pending == (await balance(suite, single)).pending
    await ledger_holds(suite.dsn)


async def test_the_daily_cap_counts_earlier_items_of_the_same_batch(suite: Suite) -> None:
    member_id = await known_member(suite)
    # each would be 30,000 points; 5,000 per payment; 20,000 per day
    requests = [payment(member_id, f"big-{i}", 1_000_000, "travel") for i in range(5)]
    results = await settle_batch(suite, requests)
    assert [r.settlement.points for r in results] == [5000, 5000, 5000, 5000, 0]
    assert results[4].settlement.state == pb.POINTS_STATE_NONE
    # and a later batch the same day still sees the cap reached
    later = await settle_batch(suite, [payment(member_id, "big-later", 1_000_000, "travel")])
    assert later[0].settlement.points == 0
    assert (await balance(suite, member_id)).lifetime_earned == 20_000
    await ledger_holds(suite.dsn)


async def test_repeats_and_key_reuse_inside_and_across_batches(suite: Suite) -> None:
    member_id = await known_member(suite)
    first = await settle_batch(
        suite,
        [payment(member_id, "k-1"), payment(member_id, "k-1"), payment(member_id, "k-1", 77)],
    )
    assert first[0].settlement == first[1].settlement
    assert (first[2].error_code, first[2].error_reason) == (6, "IDEMPOTENCY_KEY_REUSED")
    again = await settle_batch(suite, [payment(member_id, "k-1")])
    assert again[0].settlement == first[0].settlement
    assert (await balance(suite, member_id)).pending == first[0].settlement.points
    await ledger_holds(suite.dsn)


async def test_concurrent_overlapping_batches_credit_each_payment_once(suite: Suite) -> None:
    members = [await known_member(suite) for _ in range(5)]
    requests = [payment(m, f"c-{i}") for i in range(20) for m in members]
    outcomes = await asyncio.gather(
        settle_batch(suite, requests), settle_batch(suite, list(reversed(requests)))
    )
    assert all(r.error_code == 0 for results in outcomes for r in results)
    for m in members:
        assert (await balance(suite, m)).pending == 20 * 24  # 12.34 CNY dining = 24 points
    await ledger_holds(suite.dsn)


async def test_unknown_and_frozen_members_fail_alone(suite: Suite) -> None:
    good = await known_member(suite)
    frozen = await known_member(suite, pb.MEMBER_STATE_FROZEN)
    results = await settle_batch(
        suite, [payment("mnobody", "u-1"), payment(frozen, "f-1"), payment(good, "g-1")]
    )
    assert [r.error_reason for r in results] == ["MEMBER_UNKNOWN", "MEMBER_FROZEN", ""]
    # not yet announced by accounts: retryable, with the delay to wait
    assert results[0].error_code == code_pb2.UNAVAILABLE
    assert results[0].retry_delay.ToNanoseconds() == 1_000_000_000
    assert results[1].error_code == code_pb2.FAILED_PRECONDITION
    assert not results[1].HasField("retry_delay")
    assert results[2].settlement.points == 24
    await ledger_holds(suite.dsn)


@pytest.fixture
async def lenient(suite: Suite, tmp_path: Path) -> AsyncIterator[Stub]:
    """A second points service on the database: allow_negative to -1000, no return window."""
    path = rules_file(
        tmp_path, refund_policy='"allow_negative"', negative_floor="1000", pending_days="0"
    )
    async with points_with_rules(suite, path) as stub:
        yield stub


async def test_a_member_in_debt_repays_through_a_batch(
    suite: Suite, lenient: Stub, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    await settle(lenient, suite, payment(member_id, "p-1", 1234))
    await spend(suite, member_id, 24)
    await refunded(lenient, suite, refund(member_id, "p-1", "r-1", 1234))
    assert (await balance(suite, member_id)).available == -24
    other = await known_member(suite)
    results = await lenient.SettlePayments(
        pb.SettlePaymentsRequest(
            requests=[
                payment(member_id, "p-2", 1000),
                payment(other, "o-1", 1000),
                payment(member_id, "p-3", 1000),
            ]
        ),
        metadata=settler(suite),
    )
    assert [r.settlement.points for r in results.results] == [20, 20, 20]
    # 40 earned by the member in debt: 24 repay the debt, 16 remain
    assert (await balance(suite, member_id)).available == 16
    assert (await balance(suite, other)).available == 20
    await ledger_holds(suite.dsn)


async def as_stored_before_the_result_columns(dsn: str, member_id: str) -> None:
    """Rewrites the member's settlements as they were stored before 2026-12-07: the result
    as a JSON document, no result columns, the request hash of the payment's JSON form."""
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch(
            "SELECT txn_id, idempotency_key, points, rule_version, settled_state,"
            " multiplier_bps, available_at, expires_at FROM points.transactions"
            " WHERE member_id = $1 AND kind = 'settlement'",
            member_id,
        )
        for row in rows:
            payment_id = row["idempotency_key"].removeprefix("payment:")
            request = payment(member_id, payment_id)
            legacy = Payment(
                member_id,
                payment_id,
                "CNY",
                request.amount.amount_minor,
                "merchant-1",
                request.merchant_category,
                request.occur_time.ToDatetime(UTC),
                "app",
            )
            result = SettlementResult(
                member_id,
                payment_id,
                int(row["points"]),
                PointsState(row["settled_state"]),
                row["available_at"],
                row["expires_at"],
                int(row["multiplier_bps"]),
                int(row["rule_version"]),
                int(row["txn_id"]),
            )
            await db.execute(
                "UPDATE points.transactions SET result = $3::jsonb, request_hash = $4,"
                " settled_state = NULL, multiplier_bps = NULL, available_at = NULL,"
                " expires_at = NULL WHERE member_id = $1 AND txn_id = $2",
                member_id,
                row["txn_id"],
                json.dumps(result.to_json()),
                legacy.legacy_fingerprint(),
            )
    finally:
        await db.close()


@pytest.mark.parametrize("batched", [True, False], ids=["batch", "single"])
async def test_settlements_stored_before_the_result_columns_answer_their_repeats(
    suite: Suite, batched: bool
) -> None:
    member_id = await known_member(suite)
    first = await settle_batch(suite, [payment(member_id, "old-1")])
    await as_stored_before_the_result_columns(suite.dsn, member_id)

    async def again(request: pb.SettlePaymentRequest) -> pb.SettlePaymentResult:
        if batched:
            return (await settle_batch(suite, [request]))[0]
        one = await suite.points.SettlePayment(request, metadata=settler(suite))
        return pb.SettlePaymentResult(settlement=one)

    repeat = await again(payment(member_id, "old-1"))
    assert repeat.settlement == first[0].settlement
    different = payment(member_id, "old-1", 999)
    if batched:
        reused = await again(different)
        assert (reused.error_code, reused.error_reason) == (
            code_pb2.ALREADY_EXISTS,
            "IDEMPOTENCY_KEY_REUSED",
        )
    else:
        await expect_error(again(different), grpc.StatusCode.ALREADY_EXISTS)
    assert (await balance(suite, member_id)).pending == first[0].settlement.points
    await ledger_holds(suite.dsn)
