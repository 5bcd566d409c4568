"""Soak: the suite at a fixed, low rate of settlements and redemptions for minutes, sampling
each process's memory and file descriptors and each service's PostgreSQL sessions.

    python -m tests.chaos.soak --duration-s 300 --rate-per-s 20 --report soak.json

Prints a table, writes JSON, and exits 1 when, after the warm-up, a process's memory grows
(linear fit over the samples) by more than --max-growth-mib or --max-growth-pct, or its
file descriptors or database sessions keep growing. Runs on its own embedded PostgreSQL,
data folder and loopback ports, so it can run beside `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import asyncpg

from tests.chaos.harness import CHILD_SETTINGS, WITH_GATEWAY, Cluster, running_cluster
from tests.chaos.load import Load, Tokens

MIB = 1024 * 1024
MAX_IN_FLIGHT = 50
FD_GROWTH_LIMIT = 10.0  # descriptors over the measured span, by the fit
# a pool opens connections up to its maximum as it needs them (a step, not a leak); a leak
# is more sessions than the pool may hold
# (the pool, plus the connection each service keeps for its database health check)
SESSIONS_LIMIT = int(CHILD_SETTINGS["MEMBERSHIP_DB_POOL_MAX"]) + 1
SESSIONS_QUERY = (
    "SELECT application_name, count(*) AS n FROM pg_stat_activity"
    " WHERE application_name LIKE 'chaos-%' GROUP BY application_name"
)


@dataclass
class Series:
    t: list[float]
    rss_mib: list[float]
    fds: list[float]
    sessions: list[float]


@dataclass
class Verdict:
    name: str
    rss_start_mib: float
    rss_end_mib: float
    rss_max_mib: float
    slope_mib_per_min: float
    growth_mib: float
    growth_pct: float
    fds_start: float
    fds_end: float
    fd_growth: float
    sessions_max: float
    session_growth: float
    ok: bool


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def judge(name: str, s: Series, warmup_s: float, args: argparse.Namespace) -> Verdict:
    # the first minute fills caches, pools and allocator arenas: judge what comes after
    keep = [i for i, t in enumerate(s.t) if t >= warmup_s] or list(range(len(s.t)))
    t = [s.t[i] for i in keep]
    span = t[-1] - t[0] if len(t) > 1 else 0.0
    rss = [s.rss_mib[i] for i in keep]
    fds = [s.fds[i] for i in keep]
    sessions = [s.sessions[i] for i in keep]
    rate = slope(t, rss)
    growth = rate * span
    pct = 100.0 * growth / rss[0] if rss[0] else 0.0
    fd_growth = slope(t, fds) * span
    session_growth = slope(t, sessions) * span
    ok = (
        growth <= args.max_growth_mib
        and pct <= args.max_growth_pct
        and fd_growth <= FD_GROWTH_LIMIT
        and max(s.sessions) <= SESSIONS_LIMIT
    )
    return Verdict(
        name,
        round(s.rss_mib[0], 1),
        round(s.rss_mib[-1], 1),
        round(max(s.rss_mib), 1),
        round(rate * 60, 3),
        round(growth, 2),
        round(pct, 2),
        s.fds[0],
        s.fds[-1],
        round(fd_growth, 2),
        max(s.sessions),
        round(session_growth, 2),
        ok,
    )


def rss_bytes(pid: int) -> int:
    """Resident memory from /proc (Linux): VmRSS is in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def sample(
    cluster: Cluster, conn: asyncpg.Connection, series: dict[str, Series], t: float
) -> None:
    rows = await conn.fetch(SESSIONS_QUERY)
    sessions = {r["application_name"]: int(r["n"]) for r in rows}
    for name in cluster.names:
        pid = cluster.pid(name)
        s = series.setdefault(name, Series([], [], [], []))
        s.t.append(t)
        s.rss_mib.append(rss_bytes(pid) / MIB)
        s.fds.append(float(len(os.listdir(f"/proc/{pid}/fd"))))
        s.sessions.append(float(sessions.get(f"chaos-{name}", 0)))


async def drive(load: Load, rate: float, stop_at: float) -> None:
    """Fixed rate: one call every 1/rate s (two settlements, then a redemption)."""
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        async with gate:
            await (load.redeem_one("s") if n % 3 == 2 else load.settle_one("s"))

    started, n = time.monotonic(), 0
    while time.monotonic() < stop_at:
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
    await asyncio.gather(*tasks)


async def soak(cluster: Cluster, args: argparse.Namespace) -> dict[str, Series]:
    load = Load(cluster.addrs["points"], Tokens(cluster.keys_dir))
    conn = await asyncpg.connect(cluster.url)
    series: dict[str, Series] = {}
    try:
        await load.add_members(args.members, "msoak")
        started = time.monotonic()
        stop_at = started + args.duration_s
        driver = asyncio.create_task(drive(load, args.rate_per_s, stop_at))
        while not driver.done():
            await sample(cluster, conn, series, time.monotonic() - started)
            await asyncio.wait({driver}, timeout=args.sample_s)
        await driver
        await sample(cluster, conn, series, time.monotonic() - started)
        print(
            f"calls acknowledged: {len(load.ledger.settled)} settlements,"
            f" {len(load.ledger.redeemed)} redemptions; retries {load.ledger.retries},"
            f" errors {len(load.ledger.errors)}, gave up {load.ledger.gave_up}"
        )
        return series
    finally:
        await conn.close()
        await load.close()


def print_table(verdicts: list[Verdict]) -> None:
    head = f"{'process':<9} {'rss start':>9} {'end':>7} {'max':>7} {'MiB/min':>8} {'growth':>7}"
    head += f" {'%':>6} {'fds':>9} {'sessions':>8}  ok"
    print(head)
    for v in verdicts:
        print(
            f"{v.name:<9} {v.rss_start_mib:>9.1f} {v.rss_end_mib:>7.1f} {v.rss_max_mib:>7.1f}"
            f" {v.slope_mib_per_min:>8.3f} {v.growth_mib:>7.2f} {v.growth_pct:>6.2f}"
            f" {v.fds_start:>4.0f}->{v.fds_end:<4.0f} {v.sessions_max:>8.0f}"
            f"  {'yes' if v.ok else 'NO'}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--duration-s", type=float, default=300.0)
    parser.add_argument("--rate-per-s", type=float, default=20.0)
    parser.add_argument("--report", type=Path, default=Path("soak-report.json"))
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--max-growth-mib", type=float, default=20.0)
    parser.add_argument("--max-growth-pct", type=float, default=15.0)
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, _: object) -> None:
    # the default action would skip `finally`: the cluster's processes (each in a session of
    # its own) and its PostgreSQL would outlive a CI run that stops the soak
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with running_cluster(WITH_GATEWAY, MEMBERSHIP_POINTS_JOBS_INTERVAL_S="30") as cluster:
        series = asyncio.run(soak(cluster, args))
    verdicts = [judge(name, s, args.warmup_s, args) for name, s in series.items()]
    print_table(verdicts)
    report = {
        "duration_s": args.duration_s,
        "rate_per_s": args.rate_per_s,
        "warmup_s": args.warmup_s,
        "thresholds": {"growth_mib": args.max_growth_mib, "growth_pct": args.max_growth_pct},
        "verdicts": [asdict(v) for v in verdicts],
        "samples": {name: asdict(s) for name, s in series.items()},
    }
    args.report.write_text(json.dumps(report, indent=2))
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
