"""Benchmark (not a test): settlement batches with 20 running campaigns, half of them
reaching every payment, against batches with none, side by side in one run.

Two databases with the same members; the settlement use case (services/points/settlement.py)
settles batches of 100 payments from 4 callers on each, in alternating timed rounds, so that
the machine's drift falls on both alike. The campaigns mix the kinds an operator runs: a
member day (a multiplier), fixed bonuses, a tier-only one, budgets in total, per day and per
member (large enough not to run out). Goal: ≥ 0.9x the payments/s without campaigns.
Prints the ratio, writes JSON for tests.bench.report.

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

from services.points.campaigns import Campaigns
from services.points.domain.campaigns import (
    Audience,
    Budget,
    CampaignSpec,
    Effect,
    EffectKind,
    Limit,
)
from services.points.domain.members import MemberEvent
from services.points.domain.settlement import Payment
from services.points.members import MemberDirectory
from services.points.program import load_rules_in_force
from services.points.settings import DEFAULT_RULES_FILE
from services.points.settlement import Settlement
from tests.bench.common import machine_info, summarise
from tests.support.postgres import PostgresForTests

BATCH = 100
CALLERS = 4
GOAL = 0.9
MATCHED, OTHER = "bench-shop", "elsewhere"


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: float
    members: int
    output: Path | None


def clock() -> datetime:
    return datetime.now(UTC)


def campaign_specs() -> list[CampaignSpec]:
    """20 campaigns: the first 10 reach the benchmark's payments, the others a merchant it
    never pays at."""
    now = clock()
    big = 10**12

    def one(i: int, merchant: str) -> CampaignSpec:
        kind = i % 5
        effect = (
            Effect(EffectKind.MULTIPLIER, multiplier_bps=15_000 + 1000 * i)
            if kind in (0, 1)
            else Effect(EffectKind.FIXED_POINTS, points=1 + i)
        )
        budget = Budget()
        if kind == 2:
            budget = Budget(total=Limit(points=big))
        elif kind == 3:
            budget = Budget(per_day=Limit(points=big), per_member=Limit(awards=10**9))
        audience = Audience(merchant_ids=(merchant,), tiers=("basic",) if kind == 4 else ())
        return CampaignSpec(
            name=f"bench {i}",
            start_at=now - timedelta(days=1),
            end_at=now + timedelta(days=30),
            effect=effect,
            audience=audience,
            priority=i,
            cap_per_payment=500 if kind == 1 else None,
            budget=budget,
        )

    return [one(i, MATCHED) for i in range(10)] + [one(i, OTHER) for i in range(10, 20)]


async def prepare(pg: PostgresForTests, members: int, with_campaigns: bool) -> Settlement:
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
    if with_campaigns:
        campaigns = Campaigns(pool, rules, clock)
        for i, spec in enumerate(campaign_specs()):
            await campaigns.create(f"bench-{i}", spec)
            await campaigns.activate(f"bench-{i}")
    return Settlement(pool, directory, rules, clock)


class Payments:
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
                    1000 + i % 9000,
                    MATCHED,
                    "dining" if i % 3 else "retail",
                    now,
                    "app",
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
    none = await prepare(pg, options.members, with_campaigns=False)
    with_20 = await prepare(pg, options.members, with_campaigns=True)
    loads = {
        "none": (none, Payments(options.members, "n")),
        "campaigns": (with_20, Payments(options.members, "c")),
    }
    for settlement, payments in loads.values():  # warm-up: caches, plans, the book
        await timed(settlement, payments, 1.0)
    per_round: list[dict[str, float]] = []
    kept: dict[str, list[float]] = {"none": [], "campaigns": []}
    for r in range(options.rounds):
        rates = {}
        order = ["none", "campaigns"] if r % 2 == 0 else ["campaigns", "none"]
        for name in order:
            settlement, payments = loads[name]
            latencies = await timed(settlement, payments, options.seconds)
            rates[name] = len(latencies) * BATCH / options.seconds
            kept[name] += latencies
        per_round.append(rates)
        print(
            f"round {r + 1}: {rates['none']:.0f} vs {rates['campaigns']:.0f} payments/s"
            f" ({rates['campaigns'] / rates['none']:.3f}x)",
            file=sys.stderr,
        )
    return _report(options, per_round, kept)


def _report(
    options: Options, per_round: list[dict[str, float]], kept: dict[str, list[float]]
) -> dict[str, Any]:
    ratio = statistics.median(r["campaigns"] / r["none"] for r in per_round)
    results = []
    for name, label in (
        ("none", "settlement batch, no campaigns"),
        ("campaigns", "settlement batch, 20 campaigns (10 reach each)"),
    ):
        result = summarise(label, kept[name], options.seconds * options.rounds, CALLERS)
        result.throughput = round(statistics.median(r[name] for r in per_round), 1)
        result.note = f"payments/s, batches of {BATCH}"
        results.append(result)
    results[1].reference = results[0].name
    results[1].ratio_throughput = round(1 / ratio, 3)
    return {
        "benchmark": "campaigns",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "rounds": per_round,
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "met": ratio >= GOAL,
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
    print(f"campaigns/none: {report['ratio']:.3f}x (goal ≥ {GOAL}x)")
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
