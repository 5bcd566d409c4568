"""Benchmark (not a test): settlement batches with 20 running campaigns, half of them
reaching the load, against batches with none, side by side in one run.

Three databases with the same members; the settlement use case
(services/points/settlement.py) settles batches of 100 payments from 4 callers on each, in
alternating timed rounds, so that the machine's drift falls on all alike:
- none: no campaign;
- mixed: the program an operator runs (`mixed_specs`), 10 campaigns reaching the load's
  merchants and categories (each payment is reached by one to three), budgets in total, per
  day and per member among them, and 10 reaching places it never pays at. Goal: ≥ 0.9x the
  payments/s of `none`;
- stacked: the extreme, 10 combinable campaigns on every payment (no goal: ten awards per
  payment are ten times the work; shown so that the cost per award is known).
Prints the ratios, writes JSON for tests.bench.report.

    python -m tests.bench.bench_campaigns [--rounds 3] [--seconds 5] [--members 2000]
        [--output bench-results/campaigns.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg

from services.points.balance import Balances
from services.points.campaigns import Campaigns
from services.points.checkout import Checkout
from services.points.coupons import Coupons
from services.points.domain.campaigns import (
    Audience,
    Budget,
    CampaignSpec,
    Effect,
    EffectKind,
    Limit,
    MinimumAmount,
)
from services.points.domain.checkout import QuoteRequest
from services.points.domain.coupons import DiscountKind, TemplateSpec
from services.points.domain.members import MemberEvent
from services.points.domain.settlement import Payment
from services.points.members import MemberDirectory
from services.points.program import load_rules_in_force
from services.points.settings import DEFAULT_RULES_FILE
from services.points.settlement import Settlement
from tests.bench.common import machine_info, measure, summarise
from tests.support.postgres import PostgresForTests

BATCH = 100
CALLERS = 4
GOAL = 0.9
MERCHANTS = ("bench-shop-0", "bench-shop-1", "bench-shop-2", "bench-shop-3")
CATEGORIES = ("dining", "retail", "supermarket", "travel", "other")
LOADS = ("none", "mixed", "stacked")


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: float
    members: int
    output: Path | None


def clock() -> datetime:
    return datetime.now(UTC)


def _spec(i: int, effect: Effect, audience: Audience, **terms: Any) -> CampaignSpec:
    now = clock()
    return CampaignSpec(
        name=f"bench {i}",
        start_at=now - timedelta(days=1),
        end_at=now + timedelta(days=30),
        effect=effect,
        audience=audience,
        priority=i,
        **terms,
    )


def _times(bps: int) -> Effect:
    return Effect(EffectKind.MULTIPLIER, multiplier_bps=bps)


def _fixed(points: int) -> Effect:
    return Effect(EffectKind.FIXED_POINTS, points=points)


BIG = 10**12  # budgets that do not run out during the benchmark


def mixed_specs() -> list[CampaignSpec]:
    """The program an operator runs: 10 campaigns reach the benchmark's payments (a member
    day at one merchant, category bonuses, a travel bonus with a daily budget, a retail one
    with a budget per member, a minimum spend, a channel, a tier, a first-payment welcome),
    so a payment is reached by one to three; 10 more reach merchants and categories it never
    pays at."""
    reaching = [
        _spec(0, _times(20_000), Audience(merchant_ids=(MERCHANTS[0],))),
        _spec(1, _times(15_000), Audience(categories=("dining",))),
        _spec(2, _fixed(5), Audience(categories=("supermarket",)), budget=Budget(Limit(BIG))),
        _spec(
            3,
            _times(30_000),
            Audience(categories=("travel",)),
            cap_per_payment=500,
            budget=Budget(per_day=Limit(BIG)),
        ),
        _spec(
            4,
            _fixed(2),
            Audience(categories=("retail",)),
            budget=Budget(per_member=Limit(awards=10**9)),
        ),
        _spec(
            5,
            _fixed(20),
            Audience(merchant_ids=(MERCHANTS[1],), minimum=MinimumAmount("CNY", 5000)),
        ),
        _spec(6, _times(12_000), Audience(merchant_ids=(MERCHANTS[2],), channels=("pos",))),
        _spec(7, _times(20_000), Audience(merchant_ids=(MERCHANTS[3],), tiers=("gold",))),
        _spec(8, _fixed(50), Audience(merchant_ids=(MERCHANTS[3],), first_payment=True)),
        _spec(9, _fixed(1), Audience(categories=("other",))),
    ]
    elsewhere = [
        _spec(10 + i, _fixed(3), Audience(merchant_ids=(f"elsewhere-{i}",))) for i in range(5)
    ] + [_spec(15 + i, _times(20_000), Audience(categories=("utilities",))) for i in range(5)]
    return reaching + elsewhere


def stacked_specs() -> list[CampaignSpec]:
    """The extreme: 10 combinable campaigns reach every payment (10 awards each), 10 reach
    none."""
    every = Audience(merchant_ids=MERCHANTS)
    reaching = [
        _spec(
            i,
            _times(15_000 + 1000 * i) if i % 2 else _fixed(1 + i),
            every,
            budget=Budget(Limit(BIG)) if i % 5 == 2 else Budget(),
        )
        for i in range(10)
    ]
    elsewhere = [_spec(10 + i, _fixed(3), Audience(merchant_ids=("elsewhere",))) for i in range(10)]
    return reaching + elsewhere


async def prepare(pg: PostgresForTests, members: int, specs: list[CampaignSpec]) -> Settlement:
    dsn = await pg.new_database()
    pool = await asyncpg.create_pool(dsn, min_size=CALLERS, max_size=CALLERS + 2)
    assert pool is not None
    rules = await load_rules_in_force(pool, DEFAULT_RULES_FILE)
    directory = MemberDirectory(pool)
    start = clock()
    for first in range(0, members, 500):
        events = [
            MemberEvent(1, f"mbench{i:07d}", "REGISTERED", "ACTIVE", None, start)
            for i in range(first, min(members, first + 500))
        ]
        await directory.apply(events)
    campaigns = Campaigns(pool, rules, clock)
    for i, spec in enumerate(specs):
        await campaigns.create(f"bench-{i}", spec)
        await campaigns.activate(f"bench-{i}")
    return Settlement(pool, directory, rules, clock)


class Payments:
    """Payments at four merchants in five categories, by app and at the till."""

    def __init__(self, members: int, label: str) -> None:
        self._members = members
        self._ids = count()
        self._label = label

    def batch(self) -> list[Payment]:
        now = clock()
        out = []
        for _ in range(BATCH):
            i = next(self._ids)
            member = f"mbench{(i * 7919) % self._members:07d}"
            out.append(
                Payment(
                    member,
                    f"{self._label}-{i}",
                    "CNY",
                    1000 + (i * 37) % 9000,
                    MERCHANTS[i % len(MERCHANTS)],
                    CATEGORIES[i % len(CATEGORIES)],
                    now,
                    "pos" if i % 3 == 0 else "app",
                )
            )
        return out


async def timed(settlement: Settlement, payments: Payments, seconds: float) -> list[float]:
    """Latencies of the batches settled in `seconds` by CALLERS callers."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            outcomes = await settlement.settle_many(payments.batch())
            if any(o.error is not None for o in outcomes):
                raise RuntimeError(
                    f"a settlement failed: {next(o.error for o in outcomes if o.error)}"
                )
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return latencies


async def run(options: Options, pg: PostgresForTests) -> dict[str, Any]:
    specs = {"none": [], "mixed": mixed_specs(), "stacked": stacked_specs()}
    loads = {
        name: (await prepare(pg, options.members, specs[name]), Payments(options.members, name))
        for name in LOADS
    }
    for settlement, payments in loads.values():  # warm-up: caches, plans, the book
        await timed(settlement, payments, 1.0)
    per_round: list[dict[str, float]] = []
    kept: dict[str, list[float]] = {name: [] for name in LOADS}
    for r in range(options.rounds):
        rates = {}
        order = LOADS if r % 2 == 0 else tuple(reversed(LOADS))
        for name in order:
            settlement, payments = loads[name]
            latencies = await timed(settlement, payments, options.seconds)
            rates[name] = len(latencies) * BATCH / options.seconds
            kept[name] += latencies
        per_round.append(rates)
        print(
            f"round {r + 1}: none {rates['none']:.0f}, mixed {rates['mixed']:.0f}"
            f" ({rates['mixed'] / rates['none']:.3f}x), stacked {rates['stacked']:.0f}"
            f" ({rates['stacked'] / rates['none']:.3f}x) payments/s",
            file=sys.stderr,
        )
    quote = await quote_against_balance(pg, options)
    return _report(options, per_round, kept) | {"quote": quote}


QUOTE_CALLERS = 16
QUOTE_GOAL = 0.5


async def quote_against_balance(pg: PostgresForTests, options: Options) -> dict[str, Any]:
    """QuoteCheckout against GetBalance (the use cases, 16 callers, interleaved rounds) for
    members with coupons in their wallet, under the mixed program."""
    dsn = await pg.new_database()
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=QUOTE_CALLERS)
    assert pool is not None
    rules = await load_rules_in_force(pool, DEFAULT_RULES_FILE)
    directory = MemberDirectory(pool)
    members = min(options.members, 500)
    start = clock()
    events = [
        MemberEvent(1, f"mquote{i:05d}", "REGISTERED", "ACTIVE", None, start)
        for i in range(members)
    ]
    await directory.apply(events)
    campaigns = Campaigns(pool, rules, clock)
    for i, spec in enumerate(mixed_specs()):
        await campaigns.create(f"bench-{i}", spec)
        await campaigns.activate(f"bench-{i}")
    coupons = Coupons(pool, rules, clock)
    for j, off in enumerate((500, 1000, 2000)):
        terms = TemplateSpec(
            f"{off} off",
            DiscountKind.AMOUNT_OFF,
            "CNY",
            amount_off_minor=off,
            min_spend_minor=off * 5,
            valid_days=30,
            stacks_with_tier_discount=bool(j % 2),
        )
        await coupons.create_template(f"bench-{j}", terms)
        ids = [e.member_id for e in events]
        await coupons.issue(f"bench-{j}", ids, f"bench-issue-{j}")
    balances, checkout = Balances(pool, directory, clock), Checkout(pool, rules, clock)

    async def balance(i: int) -> object:
        return await balances.balance(f"mquote{i % members:05d}")

    async def quote(i: int) -> object:
        request = QuoteRequest(
            f"mquote{i % members:05d}",
            "CNY",
            1000 + (i * 37) % 9000,
            MERCHANTS[i % 4],
            CATEGORIES[i % 5],
            "app",
        )
        return await checkout.quote(request)

    rounds = []
    for r in range(options.rounds):
        for name, call in (("balance", balance), ("quote", quote)):
            result = await measure(
                name,
                call,
                max(200, int(options.seconds * 400)),
                50,
                QUOTE_CALLERS,
                f"round {r + 1}",
            )
            rounds.append((name, result))
    await pool.close()
    rates = {n: [res.throughput for m, res in rounds if m == n] for n in ("balance", "quote")}
    ratio = statistics.median(q / b for q, b in zip(rates["quote"], rates["balance"], strict=True))
    print(f"QuoteCheckout/GetBalance: {ratio:.3f}x (goal ≥ {QUOTE_GOAL}x)", file=sys.stderr)
    last = {n: asdict(res) for n, res in rounds}
    return {
        "ratio": round(ratio, 3),
        "goal": QUOTE_GOAL,
        "met": ratio >= QUOTE_GOAL,
        "balance": last["balance"],
        "quote": last["quote"],
    }


LABELS = {
    "none": "settlement batch, no campaigns",
    "mixed": "settlement batch, 20 campaigns (10 reach the load, 1-3 per payment)",
    "stacked": "settlement batch, 20 campaigns (10 stacked on every payment)",
}


def _report(
    options: Options, per_round: list[dict[str, float]], kept: dict[str, list[float]]
) -> dict[str, Any]:
    ratios = {
        name: round(statistics.median(r[name] / r["none"] for r in per_round), 3)
        for name in ("mixed", "stacked")
    }
    results = []
    for name in LOADS:
        result = summarise(LABELS[name], kept[name], options.seconds * options.rounds, CALLERS)
        result.throughput = round(statistics.median(r[name] for r in per_round), 1)
        result.note = f"payments/s, batches of {BATCH}"
        if name != "none":
            result.reference = LABELS["none"]
            result.ratio_throughput = round(1 / ratios[name], 3)
        results.append(result)
    return {
        "benchmark": "campaigns",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "rounds": per_round,
        "ratio": ratios["mixed"],
        "stacked_ratio": ratios["stacked"],
        "goal": GOAL,
        "met": ratios["mixed"] >= GOAL,
        "results": [asdict(r) for r in results],
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.members < 1:
        parser.error("rounds, seconds and members must be positive")
    return Options(args.rounds, args.seconds, args.members, args.output)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    pg = PostgresForTests()  # before the event loop: it runs one of its own to start
    try:
        report = asyncio.run(run(options, pg))
    finally:
        pg.close()
    print(
        f"mixed/none: {report['ratio']:.3f}x (goal ≥ {GOAL}x);"
        f" stacked/none: {report['stacked_ratio']:.3f}x (no goal);"
        f" QuoteCheckout/GetBalance: {report['quote']['ratio']:.3f}x (goal ≥ {QUOTE_GOAL}x)"
    )
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
