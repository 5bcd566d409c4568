"""Settlement throughput against pgbench on the same PostgreSQL (not a test:
`make bench`).

In one run, on one embedded PostgreSQL, interleaved for `--rounds` rounds:

  (a) `pgbench -M prepared` tpcb-like, 8 clients: the reference (TPS)
  (b) SettlePayment over gRPC, 32 concurrent callers
  (c) SettlePayments in batches of 100

and, as the ceiling of (b) on this machine, a no-op RPC (the health check) with the same 32
callers. For each load it prints the CPU spent per settlement by the service, PostgreSQL and
the callers (from /proc), which shows what bounds each ratio.

The points service runs as its own process (as in `make run`); the callers are asyncio tasks
in this process. Prints settlements/s as a ratio to pgbench TPS with p50/p99 latency, runs
Reconcile over the whole ledger afterwards, and writes bench-results/settlement.json.

    python -m tests.bench.bench_settlement [--rounds 3] [--seconds 10] [--members 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points.store.settlement_batch import READ_LOCKED
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from tests.bench.common import (
    Progress,
    Result,
    cpu_by_process,
    cpu_per_item_us,
    machine_info,
    postmaster_pid,
    summarise,
)
from tests.bench.settlement_sql_only import sql_only
from tests.support.postgres import PostgresForTests, pg_bin_dir, with_database

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "settlement.json"
PGBENCH_DB = "pgbench_reference"
BATCH = 100
SINGLE_CALLERS = 32
BATCH_CALLERS = 4
PGBENCH_CLIENTS = 8


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: float
    members: int
    scale: int
    preload_transactions: int  # 0: start from an empty ledger
    output: Path = RESULTS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_tool(name: str) -> str:
    bin_dir = pg_bin_dir()
    return str(bin_dir / name) if bin_dir else name


# --- pgbench ---------------------------------------------------------------------------------


async def prepare_pgbench(admin_dsn: str, scale: int) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {PGBENCH_DB}")
        await conn.execute(f"CREATE DATABASE {PGBENCH_DB}")
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, PGBENCH_DB)
    await asyncio.to_thread(_pgbench_init, dsn, scale)
    return dsn


def _pgbench_init(dsn: str, scale: int) -> None:
    subprocess.run(
        [_pg_tool("pgbench"), "-i", "-q", "-s", str(scale), dsn],
        check=True,
        capture_output=True,
        timeout=600,
    )


def run_pgbench(dsn: str, seconds: float) -> float:
    """tpcb-like TPS with prepared statements and 8 clients."""
    out = subprocess.run(
        [
            _pg_tool("pgbench"),
            "-M",
            "prepared",
            "-c",
            str(PGBENCH_CLIENTS),
            "-j",
            "2",
            "-T",
            str(max(1, round(seconds))),
            "-n",
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    ).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if match is None:
        raise RuntimeError("pgbench printed no TPS")
    return float(match[1])


# --- the points service ----------------------------------------------------------------------


@contextlib.contextmanager
def points_process(dsn: str, keys_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "MEMBERSHIP_KEYS_DIR": str(keys_dir),
        "MEMBERSHIP_POINTS_ADDR": f"127.0.0.1:{port}",
        "MEMBERSHIP_DB_POOL_MAX": "20",
        "MEMBERSHIP_LOG_LEVEL": "WARNING",
        "MEMBERSHIP_POINTS_JOBS_INTERVAL_S": "0",
    }
    process = subprocess.Popen([sys.executable, "-m", "services.points"], env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_serving(channel: grpc.aio.Channel, timeout_s: float = 30) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        await asyncio.sleep(0.2)
    raise TimeoutError("the points service did not start")


def _auth(signer: TokenSigner, role: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {signer.mint('bench', role, 3600)}"),)


async def load_members(stub: pb_grpc.PointsServiceStub, signer: TokenSigner, n: int) -> None:
    now = pb.MemberEvent().event_time
    now.GetCurrentTime()
    for start in range(0, n, 500):
        events = [
            pb.MemberEvent(
                event_id=1,
                member=f"members/mbench{i:07d}",
                type=pb.MEMBER_EVENT_TYPE_REGISTERED,
                state=pb.MEMBER_STATE_ACTIVE,
                event_time=now,
            )
            for i in range(start, min(n, start + 500))
        ]
        await stub.ApplyMemberEvents(
            pb.ApplyMemberEventsRequest(events=events), metadata=_auth(signer, "service:accounts")
        )


# --- a loaded ledger ------------------------------------------------------------------------

PRELOAD = [
    """INSERT INTO points.members (member_id, state, last_event_id, registered_at)
       SELECT 'mbench' || lpad(i::text, 7, '0'), 'ACTIVE', 1, now()
       FROM generate_series(0, $1 - 1) i WHERE $2 > 0 ON CONFLICT DO NOTHING""",
    """INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key, request_hash,
         rule_version, points, result, explanation)
       SELECT 'mbench' || lpad((k % $1)::text, 7, '0'), k, 'settlement', 'payment:pre-' || k,
         '\\x00'::bytea, 1, 10, '{}', '{}'
       FROM generate_series(1, $2) k""",
    """INSERT INTO points.lots (member_id, lot_id, txn_id, state, points, remaining, earned_at,
         available_at, expires_at, rule_version)
       SELECT 'mbench' || lpad((k % $1)::text, 7, '0'), $2 + k, k, 'PENDING', 10, 10, now(),
         '2040-01-01', '2041-01-01', 1
       FROM generate_series(1, $2) k""",
    """INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account, to_account,
         amount, lot_id, rule_version)
       SELECT 'mbench' || lpad((k % $1)::text, 7, '0'), 2 * $2 + k, k, 'program:issued',
         'member:pending', 10, $2 + k, 1
       FROM generate_series(1, $2) k""",
    """INSERT INTO points.balances (member_id, pending, lifetime_earned)
       SELECT 'mbench' || lpad((k % $1)::text, 7, '0'), 10 * count(*), 10 * count(*)
       FROM generate_series(1, $2) k GROUP BY 1""",
]


async def preload(dsn: str, members: int, transactions: int) -> int:
    """A ledger with history: `transactions` settlements (each a transaction, a lot and a
    transfer) spread over `members`, consistent enough to reconcile. Returns ledger rows."""
    if transactions == 0:
        return 0
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        for i, statement in enumerate(PRELOAD, 1):
            started = time.perf_counter()
            await conn.execute(statement, members, transactions)
            took = time.perf_counter() - started
            print(f"preload {i}/{len(PRELOAD)} took {took:.1f}s", file=sys.stderr)
        await conn.execute("SELECT setval('points.ledger_ids', $1)", 3 * transactions + 1)
        # VACUUM too: otherwise autovacuum's first pass over millions of freshly inserted
        # rows (setting their visibility) lands in a measured round as PostgreSQL's CPU
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return 3 * transactions


async def analyze(dsn: str) -> None:
    """Fresh statistics after a bulk load, so that no plan is chosen from an empty table's."""
    conn = await asyncpg.connect(dsn, command_timeout=3600)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def _scans(node: dict[str, Any]) -> Iterator[str]:
    if "Relation Name" in node:
        yield f"{node['Relation Name']} {node['Node Type'].lower()}"
    for child in node.get("Plans", []):
        yield from _scans(child)


async def locked_read_plan(dsn: str, members: int) -> str:
    """How PostgreSQL reads a batch's members, keys and days under the lock
    (store/settlement_batch.READ_LOCKED) for 100 of the members: each table's scan."""
    ids = [f"mbench{i:07d}" for i in range(0, members, max(1, members // BATCH))][:BATCH]
    today = datetime.now(UTC).date()
    conn = await asyncpg.connect(dsn)
    try:
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + READ_LOCKED,
            ids,
            today - timedelta(days=364),
            today,
            ids,
            [f"payment:plan-{i}" for i in range(len(ids))],
            ids,
            [today] * len(ids),
            3 * len(ids),
            False,  # no first-payment campaign runs
            [],  # no campaign with a per-member budget
        )
    finally:
        await conn.close()
    return ", ".join(sorted(set(_scans(json.loads(plan)[0]["Plan"]))))


# --- settlement load -------------------------------------------------------------------------


class PaymentFactory:
    """Distinct payments spread over the members; amounts vary, categories rotate."""

    CATEGORIES = ("dining", "supermarket", "travel", "retail", "top_up")

    def __init__(self, members: int) -> None:
        self._members = members
        self._ids = count()
        self._when = datetime.now(UTC) - timedelta(minutes=1)

    def next(self) -> pb.SettlePaymentRequest:
        i = next(self._ids)
        request = pb.SettlePaymentRequest(
            member=f"members/mbench{i % self._members:07d}",
            payment_id=f"bench-{os.getpid()}-{i}",
            amount=pb.Money(currency_code="CNY", amount_minor=100 + (i * 7919) % 50_000),
            merchant_id=f"merchant-{i % 97}",
            merchant_category=self.CATEGORIES[i % len(self.CATEGORIES)],
            channel="app",
        )
        request.occur_time.FromDatetime(self._when)
        return request


async def timed_load(
    label: str, callers: int, seconds: float, call: Callable[[], Awaitable[int]]
) -> tuple[list[float], int, float]:
    """`callers` loops calling `call` until the time is up; returns latencies, items, elapsed."""
    latencies: list[float] = []
    items = 0
    progress = Progress(label, int(seconds))
    started = time.perf_counter()
    deadline = started + seconds

    async def caller() -> None:
        nonlocal items
        while (now := time.perf_counter()) < deadline:
            done = await call()  # not `items += await ...`: that reads items before awaiting
            items += done
            latencies.append(time.perf_counter() - now)
            progress.update(int(min(seconds, time.perf_counter() - started)))

    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, items, time.perf_counter() - started


def settle_one(
    stub: pb_grpc.PointsServiceStub, payments: PaymentFactory, auth: tuple[tuple[str, str], ...]
) -> Callable[[], Awaitable[int]]:
    async def call() -> int:
        await stub.SettlePayment(payments.next(), metadata=auth, timeout=30)
        return 1

    return call


def settle_batch(
    stub: pb_grpc.PointsServiceStub, payments: PaymentFactory, auth: tuple[tuple[str, str], ...]
) -> Callable[[], Awaitable[int]]:
    async def call() -> int:
        request = pb.SettlePaymentsRequest(requests=[payments.next() for _ in range(BATCH)])
        response = await stub.SettlePayments(request, metadata=auth, timeout=60)
        failed = [r for r in response.results if r.error_code]
        if failed:
            raise RuntimeError(f"{len(failed)} batch items failed: {failed[0].error_reason}")
        return len(response.results)

    return call


# --- rounds and report -----------------------------------------------------------------------


@dataclass
class Round:
    pgbench_tps: float
    noop: Result
    single: Result
    batch: Result
    # the batch's own statements sent straight to PostgreSQL (settlement_sql_only.py)
    sql_only: Result
    # phase -> process -> CPU microseconds per call (noop) or per settlement
    cpu_us: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Loads:
    """The three loads of a round, each a call returning how many items it did."""

    noop: Callable[[], Awaitable[int]]
    single: Callable[[], Awaitable[int]]
    batch: Callable[[], Awaitable[int]]
    sql_only: Callable[[], Awaitable[int]]
    service_pid: int
    postmaster: int  # the run's PostgreSQL, whose processes alone are counted


async def measured_load(
    label: str,
    name: str,
    callers: int,
    seconds: float,
    loads: Loads,
    call: Callable[[], Awaitable[int]],
) -> tuple[Result, dict[str, float]]:
    before = cpu_by_process(loads.service_pid, loads.postmaster)
    lat, items, elapsed = await timed_load(label, callers, seconds, call)
    cpu = cpu_per_item_us(before, cpu_by_process(loads.service_pid, loads.postmaster), items)
    result = summarise(name, lat, elapsed, callers)
    result.throughput = round(items / elapsed, 1)  # items per second, not calls
    return result, cpu


async def one_round(n: int, options: Options, pgbench_dsn: str, loads: Loads) -> Round:
    tps = await asyncio.to_thread(run_pgbench, pgbench_dsn, options.seconds)
    print(f"round {n}: pgbench {tps:,.0f} TPS", file=sys.stderr)
    secs = options.seconds
    noop, noop_cpu = await measured_load(
        f"round {n} no-op RPC", "health Check", SINGLE_CALLERS, secs, loads, loads.noop
    )
    one, one_cpu = await measured_load(
        f"round {n} SettlePayment", "SettlePayment", SINGLE_CALLERS, secs, loads, loads.single
    )
    many, many_cpu = await measured_load(
        f"round {n} SettlePayments x{BATCH}",
        f"SettlePayments (batches of {BATCH})",
        BATCH_CALLERS,
        secs,
        loads,
        loads.batch,
    )
    floor, floor_cpu = await measured_load(
        f"round {n} lean write alone x{BATCH}",
        f"the batch's statements alone (batches of {BATCH})",
        BATCH_CALLERS,
        secs,
        loads,
        loads.sql_only,
    )
    cpu = {"noop": noop_cpu, "single": one_cpu, "batch": many_cpu, "sql_only": floor_cpu}
    return Round(tps, noop, one, many, floor, cpu)


def no_op(channel: grpc.aio.Channel) -> Callable[[], Awaitable[int]]:
    stub = health_pb2_grpc.HealthStub(channel)

    async def call() -> int:
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        return 1

    return call


def _round_lines(rounds: list[Round]) -> list[str]:
    lines = [
        f"{'round':<6} {'pgbench TPS':>12} {'no-op/s':>8} {'ratio':>6} {'single/s':>9}"
        f" {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'batch/s':>8} {'ratio':>6}"
        f" {'batch p50':>10} {'batch p99':>10} {'SQL/s':>7} {'ratio':>6}"
    ]
    for i, r in enumerate(rounds, 1):
        tps = r.pgbench_tps
        lines.append(
            f"{i:<6} {tps:>12,.0f} {r.noop.throughput:>8,.0f} {r.noop.throughput / tps:>6.2f}"
            f" {r.single.throughput:>9,.0f} {r.single.throughput / tps:>6.2f}"
            f" {r.single.p50_ms:>7.1f} {r.single.p99_ms:>7.1f} {r.batch.throughput:>8,.0f}"
            f" {r.batch.throughput / tps:>6.2f} {r.batch.p50_ms:>10.1f} {r.batch.p99_ms:>10.1f}"
            f" {r.sql_only.throughput:>7,.0f} {r.sql_only.throughput / tps:>6.2f}"
        )
    return lines


def _cpu_lines(rounds: list[Round]) -> list[str]:
    """Median CPU microseconds per call / settlement, by process, per load."""
    lines = ["CPU us per item (median of rounds): service / PostgreSQL / callers = total"]
    for phase in ("noop", "single", "batch", "sql_only"):
        samples = [r.cpu_us[phase] for r in rounds if r.cpu_us.get(phase)]
        if not samples:
            continue
        med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        lines.append(
            f"  {phase:<7} {med['service']:>7,.0f} / {med['postgres']:>7,.0f}"
            f" / {med['callers']:>7,.0f} = {med['total']:>7,.0f}"
        )
    return lines


def report(rounds: list[Round], reconcile: pb.ReconcileResponse) -> dict[str, Any]:
    tps = statistics.median(r.pgbench_tps for r in rounds)
    noop = statistics.median(r.noop.throughput for r in rounds)
    single = statistics.median(r.single.throughput for r in rounds)
    batch = statistics.median(r.batch.throughput for r in rounds)
    floor = statistics.median(r.sql_only.throughput for r in rounds)
    lines = [*_round_lines(rounds), *_cpu_lines(rounds)]
    lines.append(
        f"median: single {single / tps:.2f}x pgbench (target 0.4x; a no-op RPC reaches"
        f" {noop / tps:.2f}x), batches {batch / tps:.2f}x pgbench (target 2x, stretch 3x;"
        f" the batch's statements alone reach {floor / tps:.2f}x)"
    )
    lines.append(
        f"Reconcile after the load: ok={reconcile.ok}, {reconcile.total_violations} violation(s)"
        f" over {reconcile.checked.transactions:,} transactions"
    )
    print("\n".join(lines))
    return {
        "benchmark": "settlement",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": [asdict(r) for r in rounds],
        "median": {
            "pgbench_tps": tps,
            "noop_per_s": noop,
            "single_per_s": single,
            "batch_per_s": batch,
            "sql_only_per_s": floor,
            "noop_ratio": round(noop / tps, 3),
            "single_ratio": round(single / tps, 3),
            "batch_ratio": round(batch / tps, 3),
            "sql_only_ratio": round(floor / tps, 3),
        },
        "targets": {"single_ratio": 0.4, "batch_ratio": 2.0},
        "reconcile": {
            "ok": reconcile.ok,
            "violations": reconcile.total_violations,
            "transactions": reconcile.checked.transactions,
        },
        "machine": machine_info(),
        "settings": {
            "single_callers": SINGLE_CALLERS,
            "batch_callers": BATCH_CALLERS,
            "batch_size": BATCH,
            "pgbench_clients": PGBENCH_CLIENTS,
        },
    }


async def run(options: Options, pg: PostgresForTests, keys_dir: Path) -> dict[str, Any]:
    dsn = await pg.new_database()
    pgbench_dsn = await prepare_pgbench(pg.admin_dsn, options.scale)
    signer = TokenSigner(load_or_create_signing_key(keys_dir), "wallet-membership", "bench")
    port = _free_port()
    with points_process(dsn, keys_dir, port) as service:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await wait_serving(channel)
            stub = pb_grpc.PointsServiceStub(channel)
            if options.preload_transactions:  # the preload writes the members itself
                ledger_rows = await preload(dsn, options.members, options.preload_transactions)
            else:
                await load_members(stub, signer, options.members)
                await analyze(dsn)
                ledger_rows = 0
            plans = {"before the rounds": await locked_read_plan(dsn, options.members)}
            print(f"locked read: {plans['before the rounds']}", file=sys.stderr)
            payments, auth = PaymentFactory(options.members), _auth(signer, "settlement")
            async with asyncpg.create_pool(
                dsn, min_size=BATCH_CALLERS, max_size=BATCH_CALLERS
            ) as pool:
                loads = Loads(
                    no_op(channel),
                    settle_one(stub, payments, auth),
                    settle_batch(stub, payments, auth),
                    sql_only(pool, options.members, BATCH),
                    service.pid,
                    await postmaster_pid(dsn),
                )
                rounds = [
                    await one_round(n, options, pgbench_dsn, loads)
                    for n in range(1, options.rounds + 1)
                ]
            plans["after the rounds"] = await locked_read_plan(dsn, options.members)
            print("reconciling the ledger ...", file=sys.stderr)
            reconciled = await stub.Reconcile(
                pb.ReconcileRequest(), metadata=_auth(signer, "admin"), timeout=3600
            )
    for when, plan in plans.items():
        print(f"locked read plan {when}: {plan}")
    return {
        **report(rounds, reconciled),
        "preloaded_ledger_rows": ledger_rows,
        "locked_read_plan": plans,
    }


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per load, per round")
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--scale", type=int, default=8, help="pgbench scale factor")
    parser.add_argument(
        "--preload-transactions",
        type=int,
        default=0,
        help="settlements of history to load first (3 ledger rows each), e.g. 3400000"
        " with --members 1000000 for 1M members and 10M ledger rows",
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.seconds <= 0 or ns.members < 1 or ns.scale < 1:
        parser.error("--rounds, --seconds, --members and --scale must be positive")
    preload = max(0, ns.preload_transactions)
    return Options(ns.rounds, ns.seconds, ns.members, ns.scale, preload, ns.output)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    pg = PostgresForTests()
    try:
        with tempfile.TemporaryDirectory(prefix="wm-bench-keys-") as keys:
            # the callers too: the service, not the load generator, should be what saturates
            result = uvloop.run(run(options, pg, Path(keys)))
    finally:
        pg.close()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
