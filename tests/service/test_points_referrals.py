"""Referral bonuses: a referred member's first settlement makes the bonus due, and the
`referral_bonus` job pays both members exactly once, each in their own ledger."""

from __future__ import annotations

import itertools
from datetime import timedelta

import asyncpg
from membership.points.v1 import points_pb2 as pb

from services.points.jobs import JobRunner
from tests.service.test_points_settlement import (
    NOW,
    announce,
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
)
from tests.support.suite import Suite

# program_rules/default.toml
REFERRER_BONUS = 200
REFEREE_BONUS = 100

_ids = itertools.count(1)


async def referred_member(suite: Suite, referrer: str) -> str:
    member_id = f"mref{next(_ids):06d}"
    await announce(suite, member_id, referred_by=referrer)
    return member_id


async def available(suite: Suite, member_id: str) -> tuple[int, int]:
    got = await balance(suite, member_id)
    return got.available, got.lifetime_earned


async def run_jobs(pool: asyncpg.Pool) -> int:
    reports = await JobRunner(pool).run_once(NOW + timedelta(minutes=1))
    return sum(r.done for r in reports if r.job == "referral_bonus")


async def reconciled(suite: Suite, member_id: str) -> None:
    report = await suite.points.Reconcile(
        pb.ReconcileRequest(member=f"members/{member_id}"), metadata=suite.auth("admin")
    )
    assert (report.ok, report.total_violations) == (True, 0)


async def settle_one(suite: Suite, member_id: str, payment_id: str) -> int:
    got = await suite.points.SettlePayment(payment(member_id, payment_id), metadata=settler(suite))
    return int(got.points)


async def test_both_members_receive_the_bonus_once(suite: Suite, pool: asyncpg.Pool) -> None:
    referrer = await known_member(suite)
    referee = await referred_member(suite, referrer)
    pending = await settle_one(suite, referee, "r-1")
    assert await available(suite, referee) == (0, pending)
    assert await run_jobs(pool) >= 1
    assert await available(suite, referee) == (REFEREE_BONUS, pending + REFEREE_BONUS)
    assert await available(suite, referrer) == (REFERRER_BONUS, REFERRER_BONUS)
    # a second payment and a second run change nothing more
    second = await settle_one(suite, referee, "r-2")
    await run_jobs(pool)
    assert await available(suite, referee) == (REFEREE_BONUS, pending + second + REFEREE_BONUS)
    assert await available(suite, referrer) == (REFERRER_BONUS, REFERRER_BONUS)
    await ledger_holds(suite.dsn)
    await reconciled(suite, referee)
    await reconciled(suite, referrer)


async def test_a_batch_settlement_makes_the_bonus_due_once(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    referrer = await known_member(suite)
    referee = await referred_member(suite, referrer)
    plain = await known_member(suite)
    requests = [payment(referee, "b-1"), payment(referee, "b-2"), payment(plain, "b-3")]
    response = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    earned = sum(r.settlement.points for r in response.results[:2])
    assert await run_jobs(pool) >= 1
    await run_jobs(pool)
    assert await available(suite, referee) == (REFEREE_BONUS, earned + REFEREE_BONUS)
    assert await available(suite, referrer) == (REFERRER_BONUS, REFERRER_BONUS)
    # a member without a referrer gets nothing
    assert (await available(suite, plain))[0] == 0
    await ledger_holds(suite.dsn)
    await reconciled(suite, referee)
    await reconciled(suite, referrer)


async def test_a_frozen_referrer_forfeits_its_side(suite: Suite, pool: asyncpg.Pool) -> None:
    referrer = await known_member(suite, pb.MEMBER_STATE_FROZEN)
    referee = await referred_member(suite, referrer)
    pending = await settle_one(suite, referee, "f-1")
    await run_jobs(pool)
    await run_jobs(pool)
    assert await available(suite, referee) == (REFEREE_BONUS, pending + REFEREE_BONUS)
    assert await available(suite, referrer) == (0, 0)
    conn = await asyncpg.connect(suite.dsn)
    try:
        row = await conn.fetchrow(
            "SELECT state, referee_points, referrer_points FROM points.referral_bonuses"
            " WHERE member_id = $1",
            referee,
        )
        note = await conn.fetchval(
            "SELECT explanation->>'sentence' FROM points.transactions"
            " WHERE member_id = $1 AND kind = 'referral'",
            referee,
        )
    finally:
        await conn.close()
    assert row is not None and tuple(row) == ("PAID", REFEREE_BONUS, 0)
    assert "referrer was FROZEN" in note
    await ledger_holds(suite.dsn)
    await reconciled(suite, referee)
