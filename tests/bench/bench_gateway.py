"""The gateway's overhead on SettlePayment (not a test: `make bench`).

In one run, on one embedded PostgreSQL, interleaved for `--rounds` rounds, each load for
`--seconds` with the same `--callers` concurrent callers:

  (a) SettlePayment directly on the points service (gRPC, a settlement caller token)
  (b) SettlePayment through the gateway's gRPC pass-through (a settlement API key)
  (c) SettlePayment through REST on the gateway: POST /v1/{member}/payments:settle with the
      protobuf JSON mapping of the request (aiohttp, one shared session and connection pool)

and, as the ceiling of (a) on this machine, a no-op RPC (the health check on points).

The points service and the gateway each run as their own process (`python -m services.points`,
`python -m gateway`, as in `make run`); the callers are asyncio tasks in this process. Every
payment id is new. Each load first runs `--warmup` seconds unmeasured (connections, the
gateway's key and token caches, points' prepared statements and PostgreSQL's buffers are warm
before round 1), then the rounds turn the order of the loads so that none always runs first.

Prints throughput, p50/p99 and the ratios pass-through/direct (target >= 0.8) and REST/direct
(target >= 0.5) per round and as medians, with the CPU per call of points, the gateway,
PostgreSQL and the callers and how busy the CPUs were: on a small machine the gateway's CPU is
taken from the others. Writes bench-results/gateway.json; the gateway's log goes to
bench-results/gateway-process.log, not to the terminal, which would spend CPU on it during the
gateway's loads only.

    python -m tests.bench.bench_gateway [--rounds 3] [--seconds 5] [--warmup 2] [--callers 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import uvloop
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from gateway.keys import create_key
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from tests.bench.bench_settlement import (
    PaymentFactory,
    load_members,
    no_op,
    points_process,
    timed_load,
    wait_serving,
)
from tests.bench.common import Result, cpu_by_process, machine_info, postmaster_pid, summarise
from tests.support.postgres import PostgresForTests

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "gateway.json"
GATEWAY_LOG = RESULTS.parent / "gateway-process.log"
TARGETS = {"passthrough": 0.8, "rest": 0.5}
Load = Callable[[], Awaitable[int]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Options:
    rounds: int
    seconds: float
    warmup: float
    callers: int
    members: int
    output: Path = RESULTS


# --- the processes ---------------------------------------------------------------------------


@contextlib.contextmanager
def gateway_process(
    dsn: str, keys_dir: Path, points_port: int, http_port: int, grpc_port: int
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "MEMBERSHIP_KEYS_DIR": str(keys_dir),
        "MEMBERSHIP_POINTS_ADDR": f"127.0.0.1:{points_port}",
        # accounts and privacy are not started: no call of this benchmark reaches them
        "MEMBERSHIP_ACCOUNTS_ADDR": f"127.0.0.1:{_free_port()}",
        "MEMBERSHIP_PRIVACY_ADDR": f"127.0.0.1:{_free_port()}",
        "MEMBERSHIP_GATEWAY_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "MEMBERSHIP_GATEWAY_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        # the rate limit is not what is measured here
        "MEMBERSHIP_GATEWAY_RATE_PER_S": "100000",
        "MEMBERSHIP_GATEWAY_BURST": "1000000",
        "MEMBERSHIP_GATEWAY_TIMEOUT_S": "30",
        "MEMBERSHIP_DB_POOL_MAX": "10",
        "MEMBERSHIP_LOG_LEVEL": "WARNING",
    }
    GATEWAY_LOG.parent.mkdir(exist_ok=True)
    with GATEWAY_LOG.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_http(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/openapi.json") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the gateway did not start; see {GATEWAY_LOG}")


async def new_key(dsn: str, role: str) -> str:
    """A gateway API key; the gateway's migrations have run once it serves."""
    conn = await asyncpg.connect(dsn)
    try:
        _, key = await create_key(conn, f"bench {role}", role, None)
    finally:
        await conn.close()
    return key


def cpu_s(pid: int) -> float:
    """utime + stime of one process so far, in seconds (0 where /proc is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(points_pid: int, gateway_pid: int, postmaster: int) -> dict[str, float]:
    """CPU seconds so far of points, the gateway, the run's PostgreSQL, the callers
    (this process), and `idle` and `all`: the machine's idle (+ iowait) and total seconds."""
    spent = {"points": 0.0, "gateway": cpu_s(gateway_pid), "postgres": 0.0, "callers": 0.0}
    for (group, _), seconds in cpu_by_process(points_pid, postmaster).items():
        spent["points" if group == "service" else group] += seconds
    with contextlib.suppress(OSError, IndexError):  # no /proc: idle and all stay 0
        ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        spent["idle"], spent["all"] = ticks[3] + ticks[4], sum(ticks)
    return spent


# --- the loads -------------------------------------------------------------------------------


def settle_grpc(
    stub: pb_grpc.PointsServiceStub, payments: PaymentFactory, auth: tuple[tuple[str, str], ...]
) -> Load:
    async def call() -> int:
        await stub.SettlePayment(payments.next(), metadata=auth, timeout=30)
        return 1

    return call


def json_body(request: pb.SettlePaymentRequest) -> dict[str, Any]:
    """The request in the protobuf JSON mapping, without the member (it is in the path)."""
    return {
        "paymentId": request.payment_id,
        "amount": {
            "currencyCode": request.amount.currency_code,
            "amountMinor": str(request.amount.amount_minor),  # int64: a string in JSON
        },
        "merchantId": request.merchant_id,
        "merchantCategory": request.merchant_category,
        "channel": request.channel,
        "occurTime": request.occur_time.ToJsonString(),
    }


def settle_rest(
    session: aiohttp.ClientSession, base: str, payments: PaymentFactory, key: str
) -> Load:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def call() -> int:
        request = payments.next()
        url = f"{base}/v1/{request.member}/payments:settle"
        body = json.dumps(json_body(request))
        async with session.post(url, data=body, headers=headers) as response:
            text = await response.read()
            if response.status != 200:
                raise RuntimeError(f"REST SettlePayment: {response.status} {text[:300]!r}")
        return 1

    return call


@dataclass(frozen=True)
class Loads:
    direct: Load
    passthrough: Load
    rest: Load
    noop: Load
    points_pid: int
    gateway_pid: int
    postmaster: int  # the run's PostgreSQL, whose processes alone are counted


@dataclass
class Round:
    direct: Result
    passthrough: Result
    rest: Result
    noop: Result
    # load -> process group -> CPU microseconds per call, and "busy": % of all CPUs used
    cpu_us: dict[str, dict[str, float]]


NAMES = {
    "direct": "SettlePayment direct (points gRPC)",
    "passthrough": "SettlePayment gateway gRPC pass-through",
    "rest": "SettlePayment gateway REST",
    "noop": "health Check direct (no-op)",
}


async def measured(
    n: int, which: str, load: Load, options: Options, loads: Loads
) -> tuple[Result, dict[str, float]]:
    """One load's result and CPU microseconds per call by process group, plus `busy`: the
    share of all the machine's CPU time that was used (100: none left over)."""
    before = cpu_snapshot(loads.points_pid, loads.gateway_pid, loads.postmaster)
    lat, items, elapsed = await timed_load(
        f"round {n} {which}", options.callers, options.seconds, load
    )
    after = cpu_snapshot(loads.points_pid, loads.gateway_pid, loads.postmaster)
    result = summarise(NAMES[which], lat, elapsed, options.callers)
    spent = {k: after[k] - before.get(k, 0.0) for k in after}
    total, idle = spent.pop("all", 0.0), spent.pop("idle", 0.0)
    cpu = {k: round(v / max(items, 1) * 1e6, 1) for k, v in spent.items()}
    cpu["busy"] = round(100 * (1 - idle / total), 1) if total else 0.0
    return result, cpu


async def warm_up(options: Options, loads: Loads) -> None:
    """Every load at full concurrency, unmeasured, so that round 1 starts warm."""
    for which in ("direct", "passthrough", "rest"):
        await timed_load(f"warm-up {which}", options.callers, options.warmup, getattr(loads, which))


async def one_round(n: int, options: Options, loads: Loads) -> Round:
    results: dict[str, Result] = {}
    cpu: dict[str, dict[str, float]] = {}
    # the order turns each round so that no load always runs first (or last)
    order = ["direct", "passthrough", "rest"]
    order = order[(n - 1) % 3 :] + order[: (n - 1) % 3]
    for which in [*order, "noop"]:
        results[which], cpu[which] = await measured(n, which, getattr(loads, which), options, loads)
    return Round(results["direct"], results["passthrough"], results["rest"], results["noop"], cpu)


# --- report ----------------------------------------------------------------------------------


def _round_lines(rounds: list[Round]) -> list[str]:
    head = (
        f"{'round':<6} {'load':<42} {'calls':>7} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'x direct':>9}  CPU us/call points / gateway / postgres / callers, CPUs busy"
    )
    lines = [head, "-" * len(head)]
    for i, r in enumerate(rounds, 1):
        for which in ("direct", "passthrough", "rest", "noop"):
            res: Result = getattr(r, which)
            ratio = res.throughput / r.direct.throughput
            c = r.cpu_us[which]
            lines.append(
                f"{i:<6} {res.name:<42} {res.calls:>7} {res.throughput:>9,.0f}"
                f" {res.p50_ms:>8.2f} {res.p99_ms:>8.2f} {ratio:>9.2f}"
                f"  {c['points']:>6,.0f} / {c['gateway']:>6,.0f} / {c['postgres']:>6,.0f}"
                f" / {c['callers']:>6,.0f}, {c['busy']:>3.0f}%"
            )
    return lines


def _median_lines(medians: dict[str, dict[str, float]]) -> list[str]:
    head = (
        f"{'median of rounds':<49} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'x direct':>9}"
        f" {'target':>7} {'p99 x direct':>13}"
    )
    lines = [head, "-" * len(head)]
    for which in ("direct", "passthrough", "rest", "noop"):
        m = medians[which]
        target = f">= {TARGETS[which]}" if which in TARGETS else ""
        lines.append(
            f"{NAMES[which]:<49} {m['throughput']:>9,.0f} {m['p50_ms']:>8.2f}"
            f" {m['p99_ms']:>8.2f} {m['ratio']:>9.2f} {target:>7} {m['p99_ratio']:>13.2f}"
        )
    return lines


def _medians(rounds: list[Round], which: str) -> dict[str, float]:
    res: list[Result] = [getattr(r, which) for r in rounds]
    pairs = [(x, r.direct) for x, r in zip(res, rounds, strict=True)]
    return {
        "throughput": statistics.median(x.throughput for x in res),
        "p50_ms": statistics.median(x.p50_ms for x in res),
        "p99_ms": statistics.median(x.p99_ms for x in res),
        # the ratio of each round (the loads of a round ran back to back), then the median
        "ratio": round(statistics.median(x.throughput / d.throughput for x, d in pairs), 3),
        # how much longer the slowest 1% of calls take than direct ones (1.0: as long)
        "p99_ratio": round(statistics.median(x.p99_ms / d.p99_ms for x, d in pairs), 3),
    }


def report(rounds: list[Round], options: Options) -> dict[str, Any]:
    medians = {w: _medians(rounds, w) for w in ("direct", "passthrough", "rest", "noop")}
    verdicts = {
        which: ("met" if medians[which]["ratio"] >= target else "MISSED")
        for which, target in TARGETS.items()
    }
    lines = [*_round_lines(rounds), "", *_median_lines(medians)]
    lines.append(
        f"pass-through/direct {medians['passthrough']['ratio']:.2f} (target 0.8:"
        f" {verdicts['passthrough']}), REST/direct {medians['rest']['ratio']:.2f}"
        f" (target 0.5: {verdicts['rest']}); {options.callers} callers,"
        f" {options.rounds} rounds x {options.seconds:g}s per load"
    )
    lines.append(
        "points, the gateway, PostgreSQL and the callers are separate processes sharing"
        f" {len(os.sched_getaffinity(0))} CPU(s)"
    )
    print("\n".join(lines))
    return {
        "benchmark": "gateway",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rounds": [asdict(r) for r in rounds],
        "median": medians,
        "targets": TARGETS,
        "verdicts": verdicts,
        "settings": {
            "callers": options.callers,
            "rounds": options.rounds,
            "seconds": options.seconds,
            "warmup_s": options.warmup,
            "members": options.members,
            "processes": "points, gateway and callers in separate processes",
        },
        "machine": machine_info(),
    }


async def run(options: Options, pg: PostgresForTests, keys_dir: Path) -> dict[str, Any]:
    dsn = await pg.new_database()
    signer = TokenSigner(load_or_create_signing_key(keys_dir), "wallet-membership", "bench")
    points_port, http_port, grpc_port = _free_port(), _free_port(), _free_port()
    with (
        points_process(dsn, keys_dir, points_port) as points,
        gateway_process(dsn, keys_dir, points_port, http_port, grpc_port) as gateway,
    ):
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{points_port}") as direct_channel,
            grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as proxy_channel,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=options.callers),
                timeout=aiohttp.ClientTimeout(total=30),
            ) as session,
        ):
            await wait_serving(direct_channel)
            await wait_http(http_port)
            direct = pb_grpc.PointsServiceStub(direct_channel)
            # points learns of members from accounts' events; here they are sent to it directly
            await load_members(direct, signer, options.members)
            key = await new_key(dsn, "settlement")
            token = signer.mint("bench", "settlement", 3600)
            payments = PaymentFactory(options.members)  # one factory: ids never repeat
            loads = Loads(
                direct=settle_grpc(direct, payments, (("authorization", f"Bearer {token}"),)),
                passthrough=settle_grpc(
                    pb_grpc.PointsServiceStub(proxy_channel),
                    payments,
                    (("authorization", f"Bearer {key}"),),
                ),
                rest=settle_rest(session, f"http://127.0.0.1:{http_port}", payments, key),
                noop=no_op(direct_channel),
                points_pid=points.pid,
                gateway_pid=gateway.pid,
                postmaster=await postmaster_pid(dsn),
            )
            # one call of each first: a wrong route or key fails here, not mid-round
            for load in (loads.direct, loads.passthrough, loads.rest):
                await load()
            await warm_up(options, loads)
            rounds = [await one_round(n, options, loads) for n in range(1, options.rounds + 1)]
    return report(rounds, options)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="per load, per round")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="per load, unmeasured, before round 1"
    )
    parser.add_argument("--callers", type=int, default=16, help="concurrent callers, every load")
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    ns = parser.parse_args(argv)
    if ns.rounds < 1 or ns.seconds <= 0 or ns.callers < 1 or ns.members < 1 or ns.warmup < 0:
        parser.error("--rounds, --seconds, --callers, --members must be positive, --warmup >= 0")
    return Options(ns.rounds, ns.seconds, ns.warmup, ns.callers, ns.members, ns.output)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    pg = PostgresForTests()
    try:
        with tempfile.TemporaryDirectory(prefix="wm-bench-keys-") as keys:
            result = uvloop.run(run(options, pg, Path(keys)))
    finally:
        pg.close()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
