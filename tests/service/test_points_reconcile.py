"""Reconcile: a ledger built through the RPCs and jobs has no violation; each corruption made
in SQL (constraints dropped where they would refuse it) is named by exactly its invariant
and member."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, timedelta

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2 as pb

from services.points.jobs import JobRunner
from services.runtime.db import create_pool
from tests.service.test_points_refunds import lot_of, refund, refunded, settle, txn_id
from tests.service.test_points_settlement import NOW, known_member, ledger_holds, payment
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Built:
    member_id: str
    other_id: str
    available_lot: int  # partly refunded, still available
    cancelled_lot: int  # a pending lot refunded to nothing
    settlement_txn: int
    refund_txn: int


async def reconcile(suite: Suite, member: str = "") -> pb.ReconcileResponse:
    got: pb.ReconcileResponse = await suite.points.Reconcile(
        pb.ReconcileRequest(member=member), metadata=suite.auth("admin")
    )
    return got


async def build_ledger(suite: Suite, db: asyncpg.Connection) -> Built:
    """Settlements (available, pending, expired), refunds (partial, full while pending,
    after expiry: uncollectable), maturation and expiry jobs, for two members."""
    member_id, other_id = await known_member(suite), await known_member(suite)
    old = await settle(
        suite.points, suite, payment(member_id, "p-old", 10_000, occurred=NOW - 10 * DAY)
    )
    await settle(suite.points, suite, payment(member_id, "p-new", 5_000))
    cancelled = await settle(suite.points, suite, payment(member_id, "p-c", 1_234))
    # earned months before the others, so it expires first: the second job run takes it
    ancient = NOW - 85 * DAY
    anc = await settle(suite.points, suite, payment(member_id, "p-anc", 2_000, occurred=ancient))
    await settle(suite.points, suite, payment(other_id, "p-o", 3_000))
    partial = await refunded(suite.points, suite, refund(member_id, "p-old", "r-1", 4_000))
    await refunded(suite.points, suite, refund(member_id, "p-c", "r-c", 1_234))
    pool = await create_pool(suite.dsn, 1, 2)
    try:
        await JobRunner(pool).run_once(NOW + 8 * DAY)
        await JobRunner(pool).run_once(anc.expire_time.ToDatetime(tzinfo=UTC))
    finally:
        await pool.close()
    await refunded(suite.points, suite, refund(member_id, "p-anc", "r-anc", 2_000))
    return Built(
        member_id,
        other_id,
        (await lot_of(db, member_id, old))["lot_id"],
        (await lot_of(db, member_id, cancelled))["lot_id"],
        txn_id(old.transaction),
        txn_id(partial.transaction),
    )


@pytest.fixture
async def built(suite: Suite, db: asyncpg.Connection) -> AsyncIterator[Built]:
    made = await build_ledger(suite, db)
    yield made


async def test_a_ledger_built_through_the_rpcs_reconciles(suite: Suite, built: Built) -> None:
    await ledger_holds(suite.dsn)
    got = await reconcile(suite)
    assert list(got.violations) == []
    assert (got.ok, got.total_violations) == (True, 0)
    assert got.checked.members == 2
    assert got.checked.lots == 5
    assert got.checked.transactions >= 10  # 5 settlements, 3 refunds, maturations, expiry
    assert got.checked.transfers >= got.checked.transactions - 1
    one = await reconcile(suite, f"members/{built.other_id}")
    assert one.ok
    assert (one.checked.members, one.checked.transactions, one.checked.lots) == (1, 2, 1)


# each: the invariant, then SQL statements ($1 = member, $2 = available lot, $3 = cancelled
# lot, $4 = a settlement's txn_id, $5 = a refund's txn_id)
CORRUPTIONS: dict[str, tuple[int, list[str]]] = {
    "transfer to itself": (
        pb.LEDGER_INVARIANT_TRANSFER_INVALID,
        [
            "ALTER TABLE points.transfers DROP CONSTRAINT distinct_accounts",
            "INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
            " to_account, amount, rule_version) SELECT $1, nextval('points.ledger_ids'), $4,"
            " 'member:available', 'member:available', 5, 1",
        ],
    ),
    "transfer of nothing": (
        pb.LEDGER_INVARIANT_TRANSFER_INVALID,
        [
            "ALTER TABLE points.transfers DROP CONSTRAINT transfers_amount_check",
            "INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
            " to_account, amount, rule_version) SELECT $1, nextval('points.ledger_ids'), $4,"
            " 'program:issued', 'member:available', 0, 1",
        ],
    ),
    "transaction deleted": (
        pb.LEDGER_INVARIANT_TRANSFER_ORPHAN,
        ["DELETE FROM points.transactions WHERE member_id = $1 AND txn_id = $4"],
    ),
    "settlement points changed": (
        pb.LEDGER_INVARIANT_TRANSFER_ORPHAN,
        ["UPDATE points.transactions SET points = points + 1 WHERE member_id = $1 AND txn_id = $4"],
    ),
    "refund points changed": (
        pb.LEDGER_INVARIANT_TRANSFER_ORPHAN,
        ["UPDATE points.transactions SET points = -points WHERE member_id = $1 AND txn_id = $5"],
    ),
    "transfer cites unknown rules": (
        pb.LEDGER_INVARIANT_UNKNOWN_RULE_VERSION,
        ["UPDATE points.transfers SET rule_version = 999 WHERE member_id = $1 AND txn_id = $5"],
    ),
    "transaction cites unknown rules": (
        pb.LEDGER_INVARIANT_UNKNOWN_RULE_VERSION,
        ["UPDATE points.transactions SET rule_version = 998 WHERE member_id = $1 AND txn_id = $4"],
    ),
    # credited the wrong member account: the transaction and the lots still agree
    "transfer into pending instead of available": (
        pb.LEDGER_INVARIANT_BALANCE_MISMATCH,
        [
            "UPDATE points.transfers SET to_account = 'member:pending'"
            " WHERE member_id = $1 AND txn_id = $4 AND to_account = 'member:available'"
        ],
    ),
    # a balance and a lot changed without a transfer
    "balance raised with its lot": (
        pb.LEDGER_INVARIANT_BALANCE_MISMATCH,
        [
            "UPDATE points.balances SET available = available + 3 WHERE member_id = $1",
            "UPDATE points.lots SET remaining = remaining + 3 WHERE member_id = $1 AND lot_id = $2",
        ],
    ),
    "lot lowered": (
        pb.LEDGER_INVARIANT_LOTS_MISMATCH,
        ["UPDATE points.lots SET remaining = remaining - 1 WHERE member_id = $1 AND lot_id = $2"],
    ),
    "cancelled lot keeps points": (
        pb.LEDGER_INVARIANT_LOT_OVERDRAWN,
        ["UPDATE points.lots SET remaining = 1 WHERE member_id = $1 AND lot_id = $3"],
    ),
    "floor above the balance": (
        pb.LEDGER_INVARIANT_BELOW_FLOOR,
        [
            "ALTER TABLE points.balances DROP CONSTRAINT available_within_policy",
            "ALTER TABLE points.balances DROP CONSTRAINT balances_available_floor_check",
            "UPDATE points.balances SET available_floor = available + 1 WHERE member_id = $1",
        ],
    ),
    "key recorded twice": (
        pb.LEDGER_INVARIANT_DUPLICATE_KEY,
        [
            "ALTER TABLE points.transactions DROP CONSTRAINT one_transaction_per_key",
            "INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key,"
            " request_hash, rule_version, points, result, settled_state, multiplier_bps,"
            " available_at, expires_at, explanation)"
            " SELECT member_id, nextval('points.ledger_ids'), kind, idempotency_key,"
            " request_hash, rule_version, 0, result, settled_state, multiplier_bps,"
            " available_at, expires_at, explanation FROM points.transactions"
            " WHERE member_id = $1 AND txn_id = $4",
        ],
    ),
    # points clawed back left the books instead of returning to program:issued
    "points moved out of the books": (
        pb.LEDGER_INVARIANT_PROGRAM_TOTAL,
        [
            "UPDATE points.transfers SET to_account = 'program:typo'"
            " WHERE member_id = $1 AND txn_id = $5"
        ],
    ),
}


async def corrupt(db: asyncpg.Connection, built: Built, statements: list[str]) -> None:
    """$1..$5 are put in as literals (test values: an alphanumeric id and integers), since
    a statement uses only some of them."""
    values = {
        "$1": f"'{built.member_id}'",
        "$2": str(built.available_lot),
        "$3": str(built.cancelled_lot),
        "$4": str(built.settlement_txn),
        "$5": str(built.refund_txn),
    }
    for statement in statements:
        sql = statement
        for param, value in values.items():
            sql = sql.replace(param, value)
        await db.execute(sql)


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
async def test_each_corruption_is_named_by_its_invariant(
    suite: Suite, db: asyncpg.Connection, built: Built, what: str
) -> None:
    invariant, statements = CORRUPTIONS[what]
    await corrupt(db, built, statements)
    got = await reconcile(suite)
    found = {(v.invariant, v.member) for v in got.violations}
    assert found == {(invariant, f"members/{built.member_id}")}, [str(v) for v in got.violations]
    assert not got.ok
    assert got.total_violations == len(got.violations) >= 1
    assert all(v.detail for v in got.violations)
    # the other member is untouched, and checking only them says so
    assert (await reconcile(suite, f"members/{built.other_id}")).ok
    assert not (await reconcile(suite, f"members/{built.member_id}")).ok


async def test_the_report_is_bounded_and_counts_everything(
    suite: Suite, db: asyncpg.Connection, built: Built
) -> None:
    await corrupt(
        db,
        built,
        [
            "ALTER TABLE points.transfers DROP CONSTRAINT transfers_amount_check",
            "INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
            " to_account, amount, rule_version) SELECT $1, nextval('points.ledger_ids'),"
            " nextval('points.ledger_ids'), 'program:issued', 'member:available', 0, 1"
            " FROM generate_series(1, 1003)",
        ],
    )
    got = await reconcile(suite)
    assert len(got.violations) == 1000
    # each transfer is invalid and names a transaction that does not exist
    assert got.total_violations == 2006
    assert not got.ok


async def test_reconcile_is_for_admins_and_checks_its_input(suite: Suite) -> None:
    await expect_error(
        suite.points.Reconcile(pb.ReconcileRequest(), metadata=suite.auth("officer")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        suite.points.Reconcile(pb.ReconcileRequest(member="m1"), metadata=suite.auth("admin")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    empty = await reconcile(suite)
    assert empty.ok
    assert empty.checked == pb.ReconcileCounts()


async def test_holds_and_redemptions_reconcile(suite: Suite, db: asyncpg.Connection) -> None:
    member_id = await known_member(suite)
    member = f"members/{member_id}"
    spender = suite.auth("wallet-backend")
    await settle(suite.points, suite, payment(member_id, "p-1", 10_000, occurred=NOW - 10 * DAY))
    await suite.points.HoldPoints(
        pb.HoldPointsRequest(member=member, hold_id="h-1", points=30), metadata=spender
    )
    await suite.points.HoldPoints(
        pb.HoldPointsRequest(member=member, hold_id="h-2", points=20), metadata=spender
    )
    await suite.points.ReleaseHold(
        pb.ReleaseHoldRequest(name=f"{member}/holds/h-2", request_id="rel-1"), metadata=spender
    )
    await suite.points.RedeemPoints(
        pb.RedeemPointsRequest(member=member, request_id="red-1", points=15), metadata=spender
    )
    got = await reconcile(suite)
    assert list(got.violations) == []
    # an open hold's points are what `held` must equal
    await db.execute("UPDATE points.holds SET points = points + 1 WHERE hold_id = 'h-1'")
    got = await reconcile(suite)
    found = {(v.invariant, v.member) for v in got.violations}
    assert found == {(pb.LEDGER_INVARIANT_LOTS_MISMATCH, member)}
