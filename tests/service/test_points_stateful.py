"""Random sequences of ledger operations (settle, refund, grant, hold, capture, release,
redeem, start a budgeted campaign, issue coupons and pay with them, advance the clock and
run the jobs) against real
PostgreSQL, checked after every step against a small pure-Python model
(tests/support/ledger_model.py) and by Reconcile.

The model predicts exactly, across clock advances too: every lot of each member (points,
remaining, state and dates), the balances they add up to, which operations succeed, what a
refund claws back, and each member's qualifying points and tier row (upgrades, reviews,
grace periods, downgrades and drops by refunds). Besides whole days, the clock moves to the
very instant something falls due, or a second before, so that every bound is checked.
"""

from __future__ import annotations

import asyncio
from dataclasses import astuple
from datetime import UTC, date, datetime, timedelta
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

from services.points.campaigns import Campaigns
from services.points.coupons import Coupons
from services.points.domain import tiers
from services.points.domain.balance import NO_BALANCE, Balance
from services.points.domain.campaigns import Budget, CampaignSpec, Effect, EffectKind, Limit
from services.points.domain.coupons import DiscountKind, TemplateSpec
from services.points.domain.grants import GrantRequest
from services.points.domain.members import MemberEvent
from services.points.domain.refunds import RefundRequest
from services.points.domain.rules import GrantReason
from services.points.domain.settlement import Payment
from services.points.domain.spending import (
    CaptureRequest,
    HoldRequest,
    RedeemRequest,
    ReleaseRequest,
)
from services.points.domain.tiers import TierView
from services.points.grants import Grants
from services.points.jobs import JobRunner
from services.points.members import MemberDirectory
from services.points.program import load_rules_in_force
from services.points.reconcile import Reconciler
from services.points.refunds import Refunds
from services.points.settlement import Settlement
from services.points.spending import Spending
from services.points.store import balance as balance_store
from services.points.store import tiers as tier_store
from services.runtime.errors import DomainError
from services.runtime.identity import Caller
from tests.support.ledger_model import CampaignTerms, LedgerModel, check_terms, write_rules
from tests.support.postgres import PostgresForTests

MEMBERS = ("mstate0001", "mstate0002")
START = datetime(2031, 3, 10, 4, 0, tzinfo=UTC)
GRANTER = Caller("test:stateful", "admin", frozenset(), "t")
LOTS = (
    "SELECT state, points, remaining, earned_at, available_at, expires_at"
    " FROM points.lots WHERE member_id = $1 ORDER BY lot_id"
)
TIER_ROW = (
    "SELECT tier_code, since, review_at, grace_until FROM points.member_tiers WHERE member_id = $1"
)
QUALIFYING = "SELECT day, points FROM points.qualifying_days WHERE member_id = $1"
BUDGET_LEFT = "SELECT awards_left FROM points.campaign_budget_slices"


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self, pg: PostgresForTests, rules_path: Path) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pg = pg
        self.now = START
        self.ids = count(1)
        self.model = LedgerModel(MEMBERS)
        self.dsn = self.run(pg.new_database())
        self.pool: asyncpg.Pool = self.run(self._open_pool())
        self.in_force = self.run(load_rules_in_force(self.pool, rules_path))
        check_terms(self.in_force.rules)
        members = MemberDirectory(self.pool)
        clock = lambda: self.now  # noqa: E731 (the machine moves time)
        self.ledger = Settlement(self.pool, members, self.in_force, clock)
        # the machine's clock: a refund's window (and so its tier drop) is the machine's
        self.refunds = Refunds(self.pool, self.in_force, clock)
        self.spending = Spending(self.pool, members, self.in_force, clock)
        self.grants = Grants(self.pool, self.in_force, clock)
        self.campaigns = Campaigns(self.pool, self.in_force, clock)
        self.coupons = Coupons(self.pool, self.in_force, clock)
        # code -> [member, state, payment id, expires_at]: the coupons, as the model sees them
        self.coupon_model: dict[str, list[Any]] = {}
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

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn:
            return list(await conn.fetch(query, *args))

    @initialize()
    def a_coupon_template(self) -> None:
        spec = TemplateSpec(
            "¥1 off", DiscountKind.AMOUNT_OFF, "CNY", amount_off_minor=100, valid_days=60
        )
        self.run(self.coupons.create_template("stateful", spec))

    @rule(member=st.sampled_from(MEMBERS))
    def issue_coupon(self, member: str) -> None:
        (issued,) = self.run(self.coupons.issue("stateful", [member], f"i{next(self.ids)}"))
        coupon = issued.coupon
        assert coupon is not None and issued.error is None
        self.coupon_model[coupon.code] = [member, "ISSUED", None, coupon.expires_at]

    @precondition(lambda self: any(c[1] == "ISSUED" for c in self.coupon_model.values()))
    @rule(data=st.data(), minor=st.integers(1, 10_000))
    def pay_with_a_coupon(self, data: st.DataObject, minor: int) -> None:
        """Reserved at checkout, redeemed by the payment's settlement."""
        code = data.draw(
            # in issue order: codes are random, so sorting them would make the draws differ
            st.sampled_from([k for k, c in self.coupon_model.items() if c[1] == "ISSUED"])
        )
        member = self.coupon_model[code][0]
        payment_id = f"p{next(self.ids)}"
        self.run(self.coupons.reserve(member, code, payment_id))
        payment = Payment(member, payment_id, "CNY", minor, "shop", "retail", self.now, "app")
        result = self.run(self.ledger.settle(payment))
        assert result.points == self.model.settle(member, payment_id, minor, self.now)
        self.coupon_model[code][1:3] = ["REDEEMED", payment_id]

    @precondition(lambda self: any(c[1] == "REDEEMED" for c in self.coupon_model.values()))
    @rule(data=st.data())
    def a_used_coupon_is_refused(self, data: st.DataObject) -> None:
        code = data.draw(
            st.sampled_from([k for k, c in self.coupon_model.items() if c[1] == "REDEEMED"])
        )
        _, err = self.attempt(self.coupons.reserve(self.coupon_model[code][0], code, "again"))
        assert err is not None and err.reason == "COUPON_USED", err

    @invariant()
    def coupons_match_the_model(self) -> None:
        stored = {
            r["code"]: (r["state"], r["redeemed_payment_id"])
            for r in self.run(
                self.fetch("SELECT code, state, redeemed_payment_id FROM points.coupons")
            )
        }
        wanted = {
            code: (c[1], c[2] if c[1] == "REDEEMED" else None)
            for code, c in self.coupon_model.items()
        }
        assert stored == wanted
        # no payment redeemed two coupons, no coupon was redeemed by two payments
        payments = [p for _, p in stored.values() if p is not None]
        assert len(payments) == len(set(payments))

    # payments up to 100 CNY: a few of them reach the model's tiers, none reaches a cap
    @rule(member=st.sampled_from(MEMBERS), minor=st.integers(1, 10_000))
    def settle(self, member: str, minor: int) -> None:
        payment = Payment(
            member, f"p{next(self.ids)}", "CNY", minor, "shop", "retail", self.now, "app"
        )
        result = self.run(self.ledger.settle(payment))
        assert self.run(self.ledger.settle(payment)) == result  # a repeat is the first result
        points = self.model.settle(member, payment.payment_id, minor, self.now)
        assert result.points == points

    @precondition(lambda self: self.model.campaign is None)
    @rule(bonus=st.integers(1, 30), awards=st.integers(1, 40), qualifying=st.booleans())
    def start_campaign(self, bonus: int, awards: int, qualifying: bool) -> None:
        """A campaign for every payment of the machine, with a budget of awards."""
        ends_at = self.now + timedelta(days=60)
        terms = CampaignSpec(
            name="Stateful",
            start_at=self.now,
            end_at=ends_at,
            effect=Effect(EffectKind.FIXED_POINTS, points=bonus),
            tier_qualifying=qualifying,
            budget=Budget(total=Limit(awards=awards)),
        )
        campaign_id = f"camp{next(self.ids)}"
        self.run(self.campaigns.create(campaign_id, terms))
        self.run(self.campaigns.activate(campaign_id))
        self.model.campaign = CampaignTerms(bonus, awards, qualifying, ends_at)

    @invariant()
    def the_budget_is_never_overspent(self) -> None:
        campaign = self.model.campaign
        if campaign is None:
            return
        rows = self.run(self.fetch(BUDGET_LEFT))
        assert all(r["awards_left"] >= 0 for r in rows)
        assert sum(r["awards_left"] for r in rows) == campaign.awards_left

    @precondition(lambda self: self.model.payments)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        paid = data.draw(st.sampled_from(self.model.payments))
        amount = data.draw(st.integers(1, paid.minor))
        request = RefundRequest(
            paid.member, paid.payment_id, f"r{next(self.ids)}", "CNY", amount, ""
        )
        result, err = self.attempt(self.refunds.refund(request))
        predicted = self.model.refund(paid, amount, self.now)
        if predicted is None:
            assert err is not None and err.reason == "REFUND_EXCEEDS_PAYMENT", err
            return
        assert err is None, err
        if paid.refunded == paid.minor:  # the whole payment: its coupon, if valid, comes back
            for coupon in self.coupon_model.values():
                if (
                    coupon[2] == paid.payment_id
                    and coupon[1] == "REDEEMED"
                    and (self.now < coupon[3])
                ):
                    coupon[1:3] = ["ISSUED", None]
        assert (result.points_clawed_back, result.points_uncollectable) == predicted

    @rule(member=st.sampled_from(MEMBERS), points=st.integers(1, 10))
    def grant(self, member: str, points: int) -> None:
        request = GrantRequest(member, f"g{next(self.ids)}", points, GrantReason.CHECK_IN, "", None)
        self.run(self.grants.grant(GRANTER, request))
        self.model.grant(member, points, self.now)

    def spendable(self, data: st.DataObject, member: str) -> int:
        """Mostly what the member can afford, sometimes a little more."""
        return data.draw(st.integers(1, self.model.available(member) + 3))

    @rule(member=st.sampled_from(MEMBERS), data=st.data())
    def redeem(self, member: str, data: st.DataObject) -> None:
        points = self.spendable(data, member)
        request = RedeemRequest(member, f"d{next(self.ids)}", points, "")
        _, err = self.attempt(self.spending.redeem(request))
        self.expect(err, self.model.redeem(member, points, self.now))

    @rule(member=st.sampled_from(MEMBERS), data=st.data())
    def hold(self, member: str, data: st.DataObject) -> None:
        points = self.spendable(data, member)
        hold_id = f"h{next(self.ids)}"
        _, err = self.attempt(self.spending.hold(HoldRequest(member, hold_id, points, "", "")))
        self.expect(err, self.model.hold(member, hold_id, points, self.now))

    @staticmethod
    def expect(err: DomainError | None, enough: bool) -> None:
        if enough:
            assert err is None, err
        else:
            assert err is not None and err.reason == "INSUFFICIENT_POINTS", err

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def capture(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        hold = self.model.holds[hold_id]
        taken = data.draw(st.integers(1, sum(p for _, p in hold.parts)))
        request = CaptureRequest(hold.member, hold_id, f"c{next(self.ids)}", taken)
        self.run(self.spending.capture(request))
        self.model.close_hold(hold_id, taken, self.now)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        hold_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        member = self.model.holds[hold_id].member
        self.run(self.spending.release(ReleaseRequest(member, hold_id, f"l{next(self.ids)}")))
        self.model.close_hold(hold_id, 0, self.now)

    @rule(data=st.data())
    def advance_and_run_jobs(self, data: st.DataObject) -> None:
        """By whole days, or to the very instant something falls due, or a second before
        it: an off-by-one in any bound (`<` for `<=`, a day too many) then shows."""
        # the next edge only: the machine then walks through the edges in order, and a
        # hold made a second before one spans it
        edges = self.model.edges(self.now)[:1]
        how = data.draw(st.sampled_from(["days", "edge", "before"] if edges else ["days"]))
        if how == "days":
            self.run_jobs_at(self.now + timedelta(days=data.draw(st.integers(1, 45))))
            return
        before = edges[0] - timedelta(seconds=1)
        self.run_jobs_at(before if how == "before" and before > self.now else edges[0])

    def run_jobs_at(self, now: datetime) -> None:
        self.now = now
        self.run(self.jobs.run_once(now))
        self.model.run_jobs(now)
        for coupon in self.coupon_model.values():
            if coupon[1] == "ISSUED" and coupon[3] <= now:
                coupon[1] = "EXPIRED"

    async def balance(self, member: str) -> Balance:
        async with self.pool.acquire() as conn:
            row = await balance_store.get_balance(conn, member, self.now)
        return row or NO_BALANCE

    @invariant()
    def balances_match_the_model(self) -> None:
        for member in MEMBERS:
            row = self.run(self.balance(member))
            assert row.available == self.model.available(member), member
            assert row.pending == self.model.pending(member), member
            assert row.held == self.model.held(member), member
            assert row.lifetime_earned == self.model.earned(member), member

    @invariant()
    def lots_match_the_model(self) -> None:
        for member in MEMBERS:
            stored = [tuple(r) for r in self.run(self.fetch(LOTS, member))]
            assert stored == [lot.row() for lot in self.model.accounts[member].lots], member

    @invariant()
    def tiers_match_the_model(self) -> None:
        for member in MEMBERS:
            account = self.model.accounts[member]
            stored = [tuple(r) for r in self.run(self.fetch(TIER_ROW, member))]
            assert stored == ([] if account.tier is None else [astuple(account.tier)]), member
            days = dict(tuple(r) for r in self.run(self.fetch(QUALIFYING, member)))
            assert days == account.qualifying, member

    @invariant()
    def tier_progress_matches_the_model(self) -> None:
        """The window sum and tier as GetTierProgress reads them."""
        rules = self.in_force.rules
        views = self.run(self.views(tiers.window_days(rules, self.now)))
        for member in MEMBERS:
            account = self.model.accounts[member]
            assert views[member].qualifying == account.window_sum(self.now), member
            tier = tiers.tier_of(rules, views[member].state)
            assert tier.code == account.tier_terms().code, member

    async def views(self, window: tuple[date, date]) -> dict[str, TierView]:
        async with self.pool.acquire() as conn:
            return await tier_store.tier_views(conn, MEMBERS, *window)

    @invariant()
    def the_ledger_reconciles(self) -> None:
        report = self.run(Reconciler(self.pool).reconcile(None))
        assert report.ok, report.violations


def test_random_operations_keep_the_ledger_exact(
    postgres: PostgresForTests, tmp_path: Path
) -> None:
    rules = write_rules(tmp_path)
    run_state_machine_as_test(
        lambda: LedgerMachine(postgres, rules),  # type: ignore[arg-type]
        settings=settings(
            max_examples=20,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
