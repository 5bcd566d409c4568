"""Tiers: upgrade at once (single and batch alike), downgrade only at review (after grace),
a refund's drop, GetTierProgress, and the ledger still reconciling (default rules: silver at
1000 qualifying points, x1.25; gold at 5000; window 365 days; grace 30 days)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points.domain import earning as earn
from services.points.domain.jobs import JobReport
from services.points.jobs import JobRunner
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE
from tests.service.test_points_refunds import refund
from tests.service.test_points_settlement import (
    known_member,
    ledger_holds,
    payment,
    settler,
)
from tests.support.points import points_with_rules, rules_file
from tests.support.suite import Suite

DAY = timedelta(days=1)
RULES = load_rules_file(DEFAULT_RULES_FILE)
Stub = pb_grpc.PointsServiceStub


@pytest.fixture
async def no_grace(suite: Suite, tmp_path: Path) -> AsyncIterator[Stub]:
    """A second points service on the database whose rules have no downgrade grace."""
    rules = rules_file(tmp_path, downgrade_grace_days="0")
    async with points_with_rules(suite, rules) as stub:
        yield stub


def books(member_id: str, payment_id: str, cny: int) -> pb.SettlePaymentRequest:
    """A payment of a category that earns x1: `cny` points at the base tier."""
    return payment(member_id, payment_id, cny * 100, "books")


async def settle(stub: Stub, suite: Suite, request: pb.SettlePaymentRequest) -> pb.Settlement:
    got: pb.Settlement = await stub.SettlePayment(request, metadata=settler(suite))
    return got


async def progress(suite: Suite, member_id: str) -> pb.TierProgress:
    got: pb.TierProgress = await suite.points.GetTierProgress(
        pb.GetTierProgressRequest(name=f"members/{member_id}/tierProgress"),
        metadata=suite.auth("officer"),
    )
    return got


def when(stamp: object) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined, no-any-return]


def review(reports: list[JobReport]) -> int:
    return next(r.done for r in reports if r.job == "tier_review")


async def reconciles(suite: Suite) -> None:
    await ledger_holds(suite.dsn)
    got = await suite.points.Reconcile(pb.ReconcileRequest(), metadata=suite.auth("admin"))
    assert got.ok, got.violations


async def silver(suite: Suite, stub: Stub | None = None) -> str:
    """A member who reached silver (1000 qualifying points) just now."""
    member_id = await known_member(suite)
    await settle(stub or suite.points, suite, books(member_id, "s-1", 900))
    crossing = await settle(stub or suite.points, suite, books(member_id, "s-2", 100))
    assert crossing.tier_multiplier_bps == 10000  # earned at the tier in force when it settled
    return member_id


async def test_upgrade_at_once_and_the_next_payment_earns_more(suite: Suite) -> None:
    member_id = await known_member(suite)
    first = await settle(suite.points, suite, books(member_id, "p-1", 900))
    assert (first.points, first.tier_multiplier_bps) == (900, 10000)
    assert (await progress(suite, member_id)).tier.code == "basic"
    await settle(suite.points, suite, books(member_id, "p-2", 100))
    after = await progress(suite, member_id)
    assert (after.tier.code, after.tier.display_name, after.qualifying_points) == (
        "silver",
        "银卡",
        1000,
    )
    following = await settle(suite.points, suite, books(member_id, "p-3", 100))
    assert (following.points, following.tier_multiplier_bps) == (125, 12500)
    await reconciles(suite)


async def test_tier_progress_fields(suite: Suite) -> None:
    member_id = await silver(suite)
    got = await progress(suite, member_id)
    assert got.name == f"members/{member_id}/tierProgress"
    tier = got.tier
    assert (tier.code, tier.threshold, tier.earn_multiplier_bps, tier.discount_bps) == (
        "silver",
        1000,
        12500,
        100,
    )
    assert dict(tier.perks) == {"birthday_bonus": "100 points"}
    assert (got.next_tier.code, got.next_tier.threshold, got.points_to_next_tier) == (
        "gold",
        5000,
        4000,
    )
    today = earn.local_day(RULES, datetime.now(UTC))
    start, end = (
        earn.local_day_bounds(RULES, today - 364 * DAY)[0],
        earn.local_day_bounds(RULES, today)[1],
    )
    assert (when(got.window_start_time), when(got.window_end_time)) == (start, end)
    assert when(got.next_tier_deadline_time) == end
    since = when(got.tier_start_time)
    assert abs(since - datetime.now(UTC)) < timedelta(minutes=1)
    assert when(got.review_time) == since + 365 * DAY
    assert not got.HasField("grace_end_time")
    fresh = await progress(suite, await known_member(suite))
    assert (fresh.tier.code, fresh.qualifying_points, fresh.points_to_next_tier) == (
        "basic",
        0,
        1000,
    )
    assert not fresh.HasField("review_time") and not fresh.HasField("tier_start_time")


async def test_batch_and_single_calls_give_the_same_tiers_and_points(suite: Suite) -> None:
    one, other = await known_member(suite), await known_member(suite)
    amounts = [900, 50, 100, 100, 4000, 200]  # silver at the 3rd, gold at the 5th
    singles = [
        (await settle(suite.points, suite, books(one, f"p-{i}", cny))).points
        for i, cny in enumerate(amounts)
    ]
    requests = [books(other, f"p-{i}", cny) for i, cny in enumerate(amounts)]
    response = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    batched = [r.settlement for r in response.results]
    assert [s.points for s in batched] == singles
    assert [s.tier_multiplier_bps for s in batched] == [10000, 10000, 10000, 12500, 12500, 15000]
    got = [await progress(suite, m) for m in (one, other)]
    assert [(p.tier.code, p.qualifying_points) for p in got] == [("gold", sum(singles))] * 2
    await reconciles(suite)


async def test_downgrade_only_at_review_and_after_grace(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    member_id, kept_id = await silver(suite), await silver(suite)
    review_at = when((await progress(suite, member_id)).review_time)
    kept_review = when((await progress(suite, kept_id)).review_time)
    # points the kept member earns late in the window keep silver at the review
    late = earn.local_day(RULES, review_at - 10 * DAY)
    await db.execute("INSERT INTO points.qualifying_days VALUES ($1, $2, 1500)", kept_id, late)
    runner = JobRunner(pool)
    assert review(await runner.run_once(review_at - timedelta(seconds=1))) == 0
    assert review(await runner.run_once(review_at + DAY)) == 2
    got = await progress(suite, member_id)
    assert (got.tier.code, when(got.grace_end_time)) == ("silver", review_at + 30 * DAY)
    kept = await progress(suite, kept_id)
    assert (kept.tier.code, when(kept.review_time)) == ("silver", kept_review + 365 * DAY)
    assert not kept.HasField("grace_end_time")
    assert review(await runner.run_once(review_at + 29 * DAY)) == 0  # still in grace
    assert review(await runner.run_once(review_at + 31 * DAY)) == 1
    got = await progress(suite, member_id)
    assert (got.tier.code, got.HasField("review_time")) == ("basic", False)
    assert review(await runner.run_once(review_at + 31 * DAY)) == 0  # idempotent
    again = await settle(suite.points, suite, books(member_id, "s-3", 100))
    assert again.tier_multiplier_bps == 10000
    await reconciles(suite)


async def test_without_grace_the_review_downgrades_at_once(
    suite: Suite, pool: asyncpg.Pool, no_grace: Stub
) -> None:
    member_id = await silver(suite, no_grace)  # the tier remembers the rules it was set under
    review_at = when((await progress(suite, member_id)).review_time)
    assert review(await JobRunner(pool).run_once(review_at + DAY)) == 1
    got = await progress(suite, member_id)
    assert (got.tier.code, got.HasField("grace_end_time")) == ("basic", False)


async def test_a_refund_reduces_qualifying_points_and_can_drop_the_tier(suite: Suite) -> None:
    member_id = await silver(suite)
    await settle(suite.points, suite, books(member_id, "s-3", 240))  # 300 points at x1.25
    assert (await progress(suite, member_id)).qualifying_points == 1300
    # a refund that leaves the window sum above the threshold: the tier stays
    await suite.points.RefundPayment(
        refund(member_id, "s-1", "r-1", 20_001), metadata=settler(suite)
    )
    got = await progress(suite, member_id)
    assert (got.tier.code, got.qualifying_points) == ("silver", 1099)  # 201 clawed back
    review_time = got.review_time
    # one that takes it below: the qualification it undoes is undone at once
    await suite.points.RefundPayment(
        refund(member_id, "s-2", "r-2", 10_000), metadata=settler(suite)
    )
    got = await progress(suite, member_id)
    assert (got.tier.code, got.qualifying_points) == ("basic", 999)
    assert not got.HasField("review_time") and review_time.seconds > 0
    after = await settle(suite.points, suite, books(member_id, "s-4", 100))
    assert after.tier_multiplier_bps == 10000
    await reconciles(suite)
