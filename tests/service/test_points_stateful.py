"""Random sequences of ledger operations (settle, refund, grant, hold, capture, release,
redeem, advance the clock and run the jobs) against real PostgreSQL, checked after every step
against a small pure-Python model of each member's balances, and by Reconcile.

The model predicts every balance exactly, and which operations must succeed or fail, except
across a clock advance: what matures and expires there depends on individual lots, so the
model takes the balances the jobs leave and checks only that they created no points.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from services.points.earn import clawback_increment
from services.points.grants import GrantRequest, Grants
from services.points.jobs import JobRunner
from services.points.ledger import Ledger
from services.points.member_events import MemberDirectory, MemberEvent
from services.points.reconcile import Reconciler
from services.points.refunds import RefundRequest, Refunds
from services.points.server import load_rules_in_force
from services.points.settlement import Payment
from services.points.spending import Spending
from services.points.spending_model import (
    CaptureRequest,
    HoldRequest,
    RedeemRequest,
    ReleaseRequest,
)
from services.points.store import ledger as ledger_store
from services.runtime.errors import DomainError
from services.runtime.identity import Caller
from tests.support.points import rules_file
from tests.support.postgres import PostgresForTests

MEMBERS = ("mstate0001", "mstate0002")
START = datetime(2031, 3, 10, 4, 0, tzinfo=UTC)
GRANTER = Caller("test:stateful", "admin", frozenset(), "t")


@dataclass
class Model:
    """What each member must have, as the rules say it."""

    available: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    pending: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    held: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    earned: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEMBERS, 0))
    payments: list[tuple[str, str, int, int]] = field(default_factory=list)  # m, id, minor, pts
    refunded: dict[str, int] = field(default_factory=dict)  # payment id -> minor refunded
    holds: dict[str, tuple[str, int]] = field(default_factory=dict)  # open: id -> (m, points)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, pg: PostgresForTests, rules_path: Path) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pg = pg
        self.now = START
        self.ids = count(1)
        self.model = Model()
        self.dsn = self.run(pg.new_database())
        self.pool: asyncpg.Pool = self.run(self._open_pool())
        rules = self.run(load_rules_in_force(self.pool, rules_path))
        members = MemberDirectory(self.pool)
        clock = lambda: self.now  # noqa: E731 (the machine moves time)
        self.ledger = Ledger(self.pool, members, rules, clock)
        self.refunds = Refunds(self.pool, rules)
        self.spending = Spending(self.pool, members, rules, clock)
        self.grants = Grants(self.pool, rules, clock)
        self.jobs = JobRunner(self.pool)
        events = [MemberEvent(1, m, "REGISTERED", "ACTIVE", None, START) for m in MEMBERS]
        self.run(members.apply(events))

    async def _open_pool(self) -> asyncpg.Pool:
        # created inside the machine's loop: a pool binds to the loop that makes it
        pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        assert pool is not None
        return pool

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def attempt(self, awaitable: Any) -> tuple[Any, DomainError | None]:
        try:
            return self.run(awaitable), None
        except DomainError as err:
            return None, err

    def teardown(self) -> None:
        self.run(self.pool.close())
        self.run(self.pg.drop_database(self.dsn))
        self.loop.close()

    def usable(self, member: str) -> int:
        return max(0, self.model.available[member])

    @initialize()
    def nothing_yet(self) -> None:
        pass

    @rule(member=st.sampled_from(MEMBERS), minor=st.integers(1, 3000))
    def settle(self, member: str, minor: int) -> None:
        payment = Payment(
            member, f"p{next(self.ids)}", "CNY", minor, "shop", "retail", self.now, "app"
        )
        result = self.run(self.ledger.settle(payment))
        assert result.points == minor // 100  # 1 point per CNY at x1, rounded down once
        assert self.run(self.ledger.settle(payment)) == result  # a repeat is the first result
        self.model.pending[member] += result.points
        self.model.earned[member] += result.points
        self.model.payments.append((member, payment.payment_id, minor, result.points))

    @precondition(lambda self: self.model.payments)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        member, payment_id, minor, points = data.draw(st.sampled_from(self.model.payments))
        before = self.model.refunded.get(payment_id, 0)
        amount = data.draw(st.integers(1, minor))
        request = RefundRequest(member, payment_id, f"r{next(self.ids)}", "CNY", amount, "")
        result, err = self.attempt(self.refunds.refund(request))
        if before + amount > minor:
            assert err is not None and err.reason == "REFUND_EXCEEDS_PAYMENT"
            return
        assert err is None, err
        due = clawback_increment(points, minor, before, amount)
        assert result.points_clawed_back + result.points_uncollectable == due
        self.model.refunded[payment_id] = before + amount
        self.sync(member, taken=result.points_clawed_back)

    @rule(member=st.sampled_from(MEMBERS), points=st.integers(1, 10))
    def grant(self, member: str, points: int) -> None:
        request = GrantRequest(member, f"g{next(self.ids)}", points, "CHECK_IN", "", None)
        self.run(self.grants.grant(GRANTER, request))
        self.model.available[member] += points
        self.model.earned[member] += points

    def spendable(self, data: st.DataObject, member: str) -> int:
        """Mostly what the member can afford, sometimes a little more."""
        return data.draw(st.integers(1, self.usable(member) + 3))

    @rule(member=st.sampled_from(MEMBERS), data=st.data())
    def redeem(self, member: str, data: st.DataObject) -> None:
        points = self.spendable(data, member)
        request = RedeemRequest(member, f"d{next(self.ids)}", points, "")
        _, err = self.attempt(self.spending.redeem(request))
        if points > self.usable(member):
            assert err is not None and err.reason == "INSUFFICIENT_POINTS", err
            return
        assert err is None, err
        self.model.available[member] -= points

    @rule(member=st.sampled_from(MEMBERS), data=st.data())
    def hold(self, member: str, data: st.DataObject) -> None:
        points = self.spendable(data, member)
        hold_id = f"h{next(self.ids)}"
        _, err = self.attempt(self.spending.hold(HoldRequest(member, hold_id, points, "", "")))
        if points > self.usable(member):
            assert err is not None and err.reason == "INSUFFICIENT_POINTS", err
            return
        assert err is None, err
        self.model.available[member] -= points
        self.model.held[member] += points
        self.model.holds[hold_id] = (member, points)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        member, points = self.model.holds.pop(hold_id)
        taken = data.draw(st.integers(1, points))
        request = CaptureRequest(member, hold_id, f"c{next(self.ids)}", taken)
        self.run(self.spending.capture(request))
        self.model.held[member] -= points
        self.model.available[member] += points - taken

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        member, points = self.model.holds.pop(hold_id)
        self.run(self.spending.release(ReleaseRequest(member, hold_id, f"l{next(self.ids)}")))
        self.model.held[member] -= points
        self.model.available[member] += points

    @rule(days=st.integers(1, 45))
    def advance_and_run_jobs(self, days: int) -> None:
        """Maturation, hold expiry and lot expiry depend on single lots: the model adopts
        what the jobs leave, after checking they created nothing."""
        self.now += timedelta(days=days)
        self.run(self.jobs.run_once(self.now))
        self.model.holds.clear()  # every hold is older than its time to live now
        for member in MEMBERS:
            total = self.model.available[member] + self.model.pending[member]
            total += self.model.held[member]
            self.sync(member)
            after = self.model.available[member] + self.model.pending[member]
            assert after <= total and self.model.held[member] == 0

    def sync(self, member: str, taken: int | None = None) -> None:
        """Adopts the stored split of a member's points; with `taken`, checks first that
        exactly that many left the member's available and pending points."""
        row = self.run(self.balance(member))
        if taken is not None:
            before = self.model.available[member] + self.model.pending[member]
            assert row.available + row.pending == before - taken
        self.model.available[member], self.model.pending[member] = row.available, row.pending
        self.model.held[member] = row.held

    async def balance(self, member: str) -> ledger_store.BalanceRow:
        async with self.pool.acquire() as conn:
            row = await ledger_store.get_balance(conn, member)
        return row or ledger_store.BalanceRow(0, 0, 0, 0)

    @invariant()
    def balances_match_the_model(self) -> None:
        for member in MEMBERS:
            row = self.run(self.balance(member))
            assert row.available == self.model.available[member], member
            assert row.pending == self.model.pending[member], member
            assert row.held == self.model.held[member], member
            assert row.lifetime_earned == self.model.earned[member], member
            assert row.available >= 0 and row.pending >= 0 and row.held >= 0

    @invariant()
    def the_ledger_reconciles(self) -> None:
        report = self.run(Reconciler(self.pool).reconcile(None))
        assert report.ok, report.violations


def test_random_operations_keep_the_ledger_exact(
    postgres: PostgresForTests, tmp_path: Path
) -> None:
    rules = rules_file(tmp_path, expiry_months="1")
    run_state_machine_as_test(
        lambda: LedgerMachine(postgres, rules),  # type: ignore[arg-type]
        settings=settings(
            max_examples=12,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
