"""What the benchmarks share: timed call loops with progress and ETA, results, tables,
machine information."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import cryptography
import grpc
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend

# --- measurement -----------------------------------------------------------------------------


class Progress:
    """One line on stderr per phase: done/total, rate and ETA (redrawn in a terminal)."""

    def __init__(self, label: str, total: int) -> None:
        self._label = label
        self._total = total
        self._started = time.perf_counter()
        self._tty = sys.stderr.isatty()
        self._every = 0.2 if self._tty else 2.0
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self._last < self._every and done < self._total:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-9)
        rate = done / elapsed
        eta = (self._total - done) / rate if rate > 0 else float("inf")
        line = (
            f"{self._label:<40} {done:>7}/{self._total:<7} {rate:>9.0f}/s"
            f"  elapsed {elapsed:5.1f}s  ETA {eta:5.1f}s"
        )
        if self._tty:
            sys.stderr.write("\r" + line + ("\n" if done >= self._total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


@dataclass
class Result:
    name: str
    calls: int
    concurrency: int
    seconds: float
    throughput: float  # calls per second
    p50_ms: float
    p99_ms: float
    mean_ms: float
    ratio_throughput: float | None = None  # how many times slower than the reference
    ratio_p50: float | None = None  # p50 over the reference's p50
    reference: str = ""
    note: str = ""


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(name: str, latencies: list[float], seconds: float, concurrency: int) -> Result:
    ordered = sorted(latencies)
    return Result(
        name=name,
        calls=len(latencies),
        concurrency=concurrency,
        seconds=round(seconds, 4),
        throughput=round(len(latencies) / seconds, 1),
        p50_ms=round(percentile(ordered, 0.50) * 1000, 4),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 4),
        mean_ms=round(sum(ordered) / len(ordered) * 1000, 4),
    )


Call = Callable[[int], Awaitable[object]]


async def run_calls(call: Call, indexes: range, concurrency: int, label: str) -> list[float]:
    """Runs `call(i)` for every i with `concurrency` in flight; returns each latency (s)."""
    latencies: list[float] = []
    todo: Iterator[int] = iter(indexes)
    progress = Progress(label, len(indexes))

    async def worker() -> None:
        for i in todo:  # the shared iterator hands each index to one worker
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)
            progress.update(len(latencies))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(
    name: str, call: Call, calls: int, warmup: int, concurrency: int, phase: str = ""
) -> Result:
    """Warm-up (not measured), then `calls` measured calls; indexes never repeat."""
    label = f"{phase} {name}".strip()
    await run_calls(call, range(warmup), concurrency, f"{label} (warm-up)")
    started = time.perf_counter()
    latencies = await run_calls(call, range(warmup, warmup + calls), concurrency, label)
    return summarise(name, latencies, time.perf_counter() - started, concurrency)


def relate(result: Result, reference: Result) -> None:
    result.reference = reference.name
    result.ratio_throughput = round(reference.throughput / result.throughput, 2)
    result.ratio_p50 = round(result.p50_ms / reference.p50_ms, 2)


def related(result: Result, reference: Result) -> Result:
    copy = Result(**asdict(result))
    relate(copy, reference)
    return copy


def table(results: list[Result]) -> str:
    head = (
        f"{'operation':<42} {'calls':>6} {'in flight':>9} {'calls/s':>10} {'p50 ms':>9}"
        f" {'p99 ms':>9} {'x slower':>9} {'x p50':>7}  vs"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        slower = f"{r.ratio_throughput:.2f}" if r.ratio_throughput is not None else "1.00"
        p50 = f"{r.ratio_p50:.2f}" if r.ratio_p50 is not None else "1.00"
        lines.append(
            f"{r.name:<42} {r.calls:>6} {r.concurrency:>9} {r.throughput:>10,.0f} {r.p50_ms:>9.3f}"
            f" {r.p99_ms:>9.3f} {slower:>9} {p50:>7}  {r.reference or '(baseline)'}"
        )
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "grpcio": grpc.__version__,
        "cryptography": cryptography.__version__,
        "openssl": openssl_backend.openssl_version_text(),
        "asyncpg": asyncpg.__version__,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


# --- where the CPU goes ----------------------------------------------------------------------


def _stat_fields(stat: str) -> list[str]:
    """The fields of a /proc/<pid>/stat line after the command name (which may hold spaces):
    [0] state, [1] parent pid, [11] utime, [12] stime, [13] cutime, [14] cstime."""
    return stat.rsplit(")", 1)[1].split()


def _seconds(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int:
    """The parent pid of a process (0 where /proc is missing or the process is gone)."""
    try:
        return int(_stat_fields(Path(f"/proc/{pid}/stat").read_text())[1])
    except (OSError, IndexError, ValueError):
        return 0


async def postmaster_pid(dsn: str) -> int:
    """The pid of the postmaster serving `dsn`: the parent of a backend of it."""
    conn = await asyncpg.connect(dsn)
    try:
        return parent_of(int(await conn.fetchval("SELECT pg_backend_pid()")))
    finally:
        await conn.close()


def cpu_by_process(service_pid: int, postmaster: int) -> dict[tuple[str, int], float]:
    """CPU seconds used so far by the service, the run's PostgreSQL and this process (the
    callers), keyed by (group, pid). PostgreSQL is the postmaster `postmaster` and its
    children only (another cluster on the machine is not counted); the postmaster's own figure
    includes what its exited children used (`cutime`, `cstime`: the backends of connections
    that closed, pgbench's among them). Linux only; elsewhere empty."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    totals = {("callers", os.getpid()): time.process_time()}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields((entry / "stat").read_text())
        except OSError:  # the process ended meanwhile
            continue
        pid, used = int(entry.name), int(fields[11]) + int(fields[12])
        if pid == service_pid:
            totals[("service", pid)] = _seconds(used)
        elif pid == postmaster:
            totals[("postgres", pid)] = _seconds(used + int(fields[13]) + int(fields[14]))
        elif int(fields[1]) == postmaster:
            totals[("postgres", pid)] = _seconds(used)
    return totals


def cpu_per_item_us(
    before: dict[tuple[str, int], float], after: dict[tuple[str, int], float], items: int
) -> dict[str, float]:
    """Microseconds of CPU per item by group, and their total: each group's sum after less
    its sum before. A backend that exited in between moved its whole figure into the
    postmaster's (children's time), so the difference counts it once; one that started
    counts whole."""
    if not before or items == 0:
        return {}
    spent = {"service": 0.0, "postgres": 0.0, "callers": 0.0}
    for key, seconds in after.items():
        spent[key[0]] += seconds
    for key, seconds in before.items():
        spent[key[0]] -= seconds
    per_item = {k: round(v / items * 1e6, 1) for k, v in spent.items()}
    return {**per_item, "total": round(sum(per_item.values()), 1)}
