"""The points background jobs: maturation and expiry of lots, run at chosen times, by one
runner or several at once, in bounded batches, and the `membership points run-jobs` command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from datetime import UTC, datetime, timedelta

import asyncpg
from membership.points.v1 import points_pb2 as pb

from services.points.domain.jobs import JobLimits, JobReport
from services.points.jobs import JobLoop, JobRunner
from services.runtime.db import create_pool
from tests.service.test_points_settlement import (
    NOW,
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
)
from tests.support.suite import Suite

DAY = timedelta(days=1)


def done(reports: list[JobReport]) -> dict[str, int]:
    return {r.job: r.done for r in reports}


async def settle(suite: Suite, member_id: str, pid: str, occurred: datetime = NOW) -> pb.Settlement:
    got: pb.Settlement = await suite.points.SettlePayment(
        payment(member_id, pid, 10_000, "supermarket", occurred=occurred), metadata=settler(suite)
    )
    return got


async def test_pending_points_become_available_after_the_return_window(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite, member_id, "p-1")
    runner = JobRunner(pool)
    assert done(await runner.run_once(NOW + 6 * DAY)) == {
        "maturation": 0,
        "hold_expiry": 0,
        "expiry": 0,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    got = await balance(suite, member_id)
    assert (got.pending, got.available) == (settled.points, 0)
    assert done(await runner.run_once(NOW + 8 * DAY)) == {
        "maturation": 1,
        "hold_expiry": 0,
        "expiry": 0,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    got = await balance(suite, member_id)
    assert (got.pending, got.available, got.lifetime_earned) == (0, settled.points, 150)
    await ledger_holds(suite.dsn)
    await _maturation_is_explained(db, member_id, settled)


async def one(db: asyncpg.Connection, sql: str, *args: object) -> asyncpg.Record:
    row = await db.fetchrow(sql, *args)
    assert row is not None
    return row


async def _maturation_is_explained(
    db: asyncpg.Connection, member_id: str, settled: pb.Settlement
) -> None:
    """One transaction per lot, keyed by the lot, with the lot's rule version throughout."""
    sql = "SELECT * FROM points.transactions WHERE member_id = $1 AND kind = 'maturation'"
    txn = await one(db, sql, member_id)
    lot = await one(db, "SELECT * FROM points.lots WHERE member_id = $1", member_id)
    assert lot["state"] == "AVAILABLE" and lot["remaining"] == settled.points
    assert txn["idempotency_key"] == f"maturation:{lot['lot_id']}"
    assert bytes(txn["request_hash"]) == hashlib.sha256(txn["idempotency_key"].encode()).digest()
    assert txn["rule_version"] == lot["rule_version"] == settled.rule_version
    assert json.loads(txn["explanation"])["lot"]["lot_id"] == lot["lot_id"]
    sql = "SELECT * FROM points.transfers WHERE member_id = $1 AND txn_id = $2"
    transfer = await one(db, sql, member_id, txn["txn_id"])
    accounts = (transfer["from_account"], transfer["to_account"])
    assert accounts == ("member:pending", "member:available")
    assert (transfer["amount"], transfer["rule_version"]) == (settled.points, lot["rule_version"])


async def test_lots_expire_at_their_expiry_soonest_first(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    # 70 days apart: always two different month ends
    older = await settle(suite, member_id, "p-old", NOW - 80 * DAY)
    newer = await settle(suite, member_id, "p-new", NOW - 10 * DAY)
    first_expiry = older.expire_time.ToDatetime(tzinfo=UTC)
    assert first_expiry < newer.expire_time.ToDatetime(tzinfo=UTC)
    got = await balance(suite, member_id)
    assert [e.points for e in got.expiring] == [older.points, newer.points]
    runner = JobRunner(pool)
    just_before = first_expiry - timedelta(microseconds=1)
    assert done(await runner.run_once(just_before)) == {
        "maturation": 0,
        "hold_expiry": 0,
        "expiry": 0,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    assert done(await runner.run_once(first_expiry)) == {
        "maturation": 0,
        "hold_expiry": 0,
        "expiry": 1,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    got = await balance(suite, member_id)
    assert got.available == newer.points
    assert [e.points for e in got.expiring] == [newer.points]
    assert got.expiring[0].expire_time == newer.expire_time
    await ledger_holds(suite.dsn)
    txn = await one(
        db,
        "SELECT t.points, t.rule_version, f.from_account, f.to_account, f.amount"
        " FROM points.transactions t JOIN points.transfers f USING (member_id, txn_id)"
        " WHERE t.member_id = $1 AND t.kind = 'expiry'",
        member_id,
    )
    assert (txn["from_account"], txn["to_account"]) == ("member:available", "program:expired")
    assert (txn["amount"], txn["points"]) == (older.points, -older.points)
    assert txn["rule_version"] == older.rule_version
    states = await db.fetch(
        "SELECT state, remaining FROM points.lots WHERE member_id = $1 ORDER BY expires_at",
        member_id,
    )
    assert [(r["state"], r["remaining"]) for r in states] == [
        ("EXPIRED", 0),
        ("AVAILABLE", newer.points),
    ]


async def test_a_second_run_at_the_same_time_does_nothing(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    await settle(suite, member_id, "p-1")
    await settle(suite, member_id, "p-2", NOW - 10 * DAY)
    later = NOW + 400 * DAY  # past both the return window and every expiry
    runner = JobRunner(pool)
    assert done(await runner.run_once(later)) == {
        "maturation": 1,
        "hold_expiry": 0,
        "expiry": 2,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    assert done(await runner.run_once(later)) == {
        "maturation": 0,
        "hold_expiry": 0,
        "expiry": 0,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    rows = await db.fetchval(
        "SELECT count(*) FROM points.transactions WHERE member_id = $1", member_id
    )
    assert rows == 2 + 3
    got = await balance(suite, member_id)
    assert (got.available, got.pending, list(got.expiring)) == (0, 0, [])
    await ledger_holds(suite.dsn)


async def _owe(db: asyncpg.Connection, member_id: str, points: int) -> None:
    """A debt as a refund under allow_negative leaves it: available below zero, recorded."""
    async with db.transaction():
        txn_id, transfer_id = [
            r[0]
            for r in await db.fetch(
                "SELECT nextval('points.ledger_ids') FROM generate_series(1, 2)"
            )
        ]
        await db.execute(
            "UPDATE points.balances SET available_floor = -1000, available = available - $2"
            " WHERE member_id = $1",
            member_id,
            points,
        )
        await db.execute(
            "INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key,"
            " request_hash, rule_version, points, result, explanation)"
            " VALUES ($1, $2, 'test', 'test:debt', '\\x00', 1, $3, '{}', '{}')",
            member_id,
            txn_id,
            -points,
        )
        await db.execute(
            "INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
            " to_account, amount, rule_version)"
            " VALUES ($1, $2, $3, 'member:available', 'program:adjustment', $4, 1)",
            member_id,
            transfer_id,
            txn_id,
            points,
        )


async def test_maturing_points_repay_a_debt_first(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite, member_id, "p-1")
    await _owe(db, member_id, 40)
    await JobRunner(pool).run_once(NOW + 8 * DAY)
    got = await balance(suite, member_id)
    assert (got.available, got.pending) == (settled.points - 40, 0)
    lot = await one(db, "SELECT state, remaining FROM points.lots WHERE member_id = $1", member_id)
    # available + debt == what the available lots hold (services/points/domain/debt.py)
    assert (lot["state"], lot["remaining"]) == ("AVAILABLE", settled.points - 40)
    sql = "SELECT explanation FROM points.transactions WHERE member_id = $1 AND kind = 'maturation'"
    assert json.loads((await one(db, sql, member_id))["explanation"])["debt_repaid"] == 40
    await ledger_holds(suite.dsn)


async def _settle_many(suite: Suite, members: list[str], per_member: int) -> int:
    """`per_member` pending lots for each member, through SettlePayments; returns the count."""
    requests = [
        payment(m, f"bulk-{i}", 1000, "supermarket") for m in members for i in range(per_member)
    ]
    for start in range(0, len(requests), 400):
        response = await suite.points.SettlePayments(
            pb.SettlePaymentsRequest(requests=requests[start : start + 400]),
            metadata=settler(suite),
        )
        assert all(r.error_code == 0 for r in response.results)
    return len(requests)


async def _kind_counts(db: asyncpg.Connection, kind: str) -> tuple[int, int]:
    row = await db.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT idempotency_key) AS keys"
        " FROM points.transactions WHERE kind = $1",
        kind,
    )
    assert row is not None
    return int(row["n"]), int(row["keys"])


async def test_two_runners_at_once_handle_each_lot_exactly_once(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    members = [await known_member(suite) for _ in range(6)]
    lots = await _settle_many(suite, members, 10)
    other = await create_pool(suite.dsn, 1, 4)
    try:
        small = JobLimits(batch_size=7, max_batches=100)
        runs = [JobRunner(p, limits=small).run_once(NOW + 8 * DAY) for p in (pool, other)]
        first, second = await asyncio.gather(*runs)
    finally:
        await other.close()
    assert done(first)["maturation"] + done(second)["maturation"] == lots
    assert await _kind_counts(db, "maturation") == (lots, lots)
    pending = await db.fetchval("SELECT count(*) FROM points.lots WHERE state = 'PENDING'")
    assert pending == 0
    await ledger_holds(suite.dsn)


async def test_work_beyond_one_batch_and_the_bound_per_run(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    members = [await known_member(suite) for _ in range(40)]
    lots = await _settle_many(suite, members, 30)
    assert lots == 1200
    bounded = JobRunner(pool, limits=JobLimits(batch_size=500, max_batches=2))
    [maturation, *_] = await bounded.run_once(NOW + 8 * DAY)
    assert (maturation.done, maturation.batches, maturation.more_left) == (1000, 2, True)
    await ledger_holds(suite.dsn)
    [maturation, *_] = await JobRunner(pool).run_once(NOW + 8 * DAY)
    assert (maturation.done, maturation.batches, maturation.more_left) == (200, 1, False)
    assert await _kind_counts(db, "maturation") == (1200, 1200)
    got = await balance(suite, members[0])
    assert (got.pending, got.available) == (0, 30 * 15)  # 10 CNY at supermarket x1.5
    await ledger_holds(suite.dsn)


async def test_the_loop_runs_the_jobs_at_its_clock_until_stopped(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite, member_id, "p-1")
    loop = JobLoop(JobRunner(pool), lambda: NOW + 8 * DAY, interval_s=0.05)
    loop.start()
    try:
        for _ in range(100):
            if (await balance(suite, member_id)).available == settled.points:
                break
            await asyncio.sleep(0.05)
    finally:
        await loop.stop()
    assert (await balance(suite, member_id)).available == settled.points
    await ledger_holds(suite.dsn)


async def _cli(dsn: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "membership_cli",
        "points",
        "run-jobs",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_run_jobs_command(suite: Suite) -> None:
    member_id = await known_member(suite)
    settled = await settle(suite, member_id, "p-1")
    code, out, err = await _cli(suite.dsn, "--now", "2030-01-01T00:00:00Z", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["now"] == "2030-01-01T00:00:00+00:00"
    assert {job: r["done"] for job, r in report["jobs"].items()} == {
        "maturation": 1,
        "hold_expiry": 0,
        "expiry": 1,
        "tier_review": 0,
        "referral_bonus": 0,
        "unknown_member_purge": 0,
        "campaign_coupons": 0,
        "coupon_expiry": 0,
    }
    assert (await balance(suite, member_id)).lifetime_earned == settled.points
    code, out, _ = await _cli(suite.dsn, "--now", "2030-01-01T08:00:00+08:00")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["maturation", "0", "done"]
    await ledger_holds(suite.dsn)


async def test_run_jobs_command_rejects_a_bad_time(suite: Suite) -> None:
    for bad in ("tomorrow", "2030-01-01T00:00:00"):
        code, out, err = await _cli(suite.dsn, "--now", bad)
        assert (code, out) == (2, "")
        assert "--now" in err
