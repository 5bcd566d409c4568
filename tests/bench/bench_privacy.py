"""Benchmark of the privacy service's data-subject requests and consent checks (not a test:
`make bench`).

Starts its own embedded PostgreSQL and the services in process (the test suite's set-up:
points, privacy and accounts), then measures side by side in one run:

  (a) GetBalance, one call in flight, of a member with --transactions ledger transactions
      (the reference for (b)) and of the members of (c) (the reference for (c))
  (b) ACCESS: ApproveDataRequest until the request is COMPLETED (the export is built while
      the call runs: accounts' export, the ledger's pages from points, the bundle, the ZIP,
      its encryption and storage), then one full DownloadExport download (every part), for the
      member of (a); --access-runs requests, each its own export. Target: under 2 s.
  (c) DELETION: ApproveDataRequest until COMPLETED for --deletions members with
      --deletion-payments transactions each (key destroyed, accounts erased, points
      restricted), one at a time. Target: under 200 ms.
  (d) CheckConsent with --callers concurrent callers for --seconds, beside the empty RPC
      (grpc.health.v1.Health/Check on the privacy server) with the same callers and time.

The ledger is loaded through points' own API (SettlePayments, --batch payments a call, spread
over the past year so the daily cap rarely bites). Speed is shown by ratios measured in the
same run, never by timed assertions. Prints tables and writes bench-results/privacy.json with
machine information.

    python -m tests.bench.bench_privacy [--transactions 100000] [--access-runs 3]
        [--deletions 20] [--callers 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from membership.points.v1 import points_pb2 as ppb
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import data_rights_pb2 as dpb

from tests.bench.common import (
    Call,
    Progress,
    Result,
    machine_info,
    measure,
    percentile,
    relate,
    summarise,
    table,
)
from tests.support.accounts import next_request_id, register
from tests.support.data_rights import create, member_with_ledger, settle, verify
from tests.support.postgres import PostgresForTests
from tests.support.suite import Suite, running_suite

RESULTS = Path(__file__).resolve().parents[2] / "bench-results" / "privacy.json"
TOKEN_TTL_S = 3600
ACCESS_TARGET_S = 2.0
DELETION_TARGET_S = 0.2
COMPLETED = dpb.DATA_REQUEST_STATE_COMPLETED
WAIT_COMPLETED_S = 900.0  # generous: a slow fulfilment is measured, not cut short
CATEGORIES = ("dining", "supermarket", "travel", "retail", "top_up")
CONSENT_PURPOSES = ("marketing", "personalization", "payment_records")
# the preloaded payments spread over this many days before now (within the program's
# max_settlement_delay_days)
HISTORY_DAYS = 80


@dataclass(frozen=True)
class Options:
    transactions: int
    batch: int
    preload_callers: int
    access_runs: int
    deletions: int
    deletion_payments: int
    balance_calls: int
    callers: int
    seconds: float
    consent_members: int
    output: Path


class Auth:
    """Tokens valid for the whole run (the suite's helpers mint 5-minute ones)."""

    def __init__(self, suite: Suite) -> None:
        self.wallet = suite.auth("wallet-backend", "wallet-app", TOKEN_TTL_S)
        self.officer = suite.auth("officer", "officer-1", TOKEN_TTL_S)
        self.settlement = suite.auth("settlement", "bench:settlement", TOKEN_TTL_S)


@contextlib.asynccontextmanager
async def ticking(progress: Progress, total: int, done: Callable[[], int]) -> AsyncIterator[None]:
    """Redraws `progress` while the work inside runs, so a long call shows its elapsed time
    (Progress throttles the lines), and once more at the end."""

    async def tick() -> None:
        while (now := done()) < total:
            progress.update(now)
            await asyncio.sleep(0.2)

    task = asyncio.get_running_loop().create_task(tick())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    progress.update(total)


# --- the member with a long ledger -----------------------------------------------------------


class Payments:
    """Distinct payments of one member, newest first over HISTORY_DAYS; small amounts (1 to
    51 CNY), so the daily cap rarely cuts an earning; categories rotate (top_up earns none
    but is recorded all the same)."""

    def __init__(self, member_id: str, total: int) -> None:
        self._member = f"members/{member_id}"
        self._ids = count()
        self._start = datetime.now(UTC) - timedelta(minutes=1)
        self._step = timedelta(days=HISTORY_DAYS) / max(1, total)

    def next(self) -> ppb.SettlePaymentRequest:
        i = next(self._ids)
        request = ppb.SettlePaymentRequest(
            member=self._member,
            payment_id=f"bench-history-{i}",
            amount=ppb.Money(currency_code="CNY", amount_minor=100 + (i * 7919) % 5_000),
            merchant_id=f"merchant-{i % 97}",
            merchant_category=CATEGORIES[i % len(CATEGORIES)],
            channel="app",
        )
        request.occur_time.FromDatetime(self._start - i * self._step)
        return request


async def member_with_history(suite: Suite, auth: Auth, options: Options) -> tuple[str, float]:
    """A registered member (accounts, privacy and points know them) with
    options.transactions ledger transactions; returns the id and the load's seconds."""
    member = await register(suite, display_name="Bench Member", email="bench@example.com")
    await settle(suite, member.member_id)  # waits until accounts' relay told points
    left = options.transactions - 1
    payments = Payments(member.member_id, left)
    progress = Progress(f"[1/5] preload SettlePayments x{options.batch}", left)
    done = 0
    started = time.perf_counter()

    async def caller() -> None:
        nonlocal done, left
        while left > 0:
            size = min(options.batch, left)
            left -= size
            request = ppb.SettlePaymentsRequest(requests=[payments.next() for _ in range(size)])
            response = await suite.points.SettlePayments(
                request, metadata=auth.settlement, timeout=120
            )
            failed = [r for r in response.results if r.error_code]
            if failed:
                raise RuntimeError(f"{len(failed)} payments failed: {failed[0].error_reason}")
            done += size
            progress.update(done)

    await asyncio.gather(*(caller() for _ in range(options.preload_callers)))
    return member.member_id, time.perf_counter() - started


async def ledger_size(dsn: str, member_id: str) -> int:
    """The member's transactions; and fresh planner statistics (ANALYZE) of the database as
    measured. Taken once every member exists: statistics taken while the long ledger was
    the only one say every transaction is that member's, and a prepared statement's generic
    plan then scans the whole table for any member (PostgreSQL switches to it after 5 runs,
    on each pooled connection)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("ANALYZE")
        n = await conn.fetchval(
            "SELECT count(*) FROM points.transactions WHERE member_id = $1", member_id
        )
        return int(n)
    finally:
        await conn.close()


# --- data-subject requests -------------------------------------------------------------------


async def approved(suite: Suite, auth: Auth, name: str) -> tuple[dpb.DataRequest, float, bool]:
    """ApproveDataRequest, then (only if fulfilment did not finish within the call) polls
    until COMPLETED. Returns the request, the seconds until COMPLETED and whether the call
    alone finished it."""
    started = time.perf_counter()
    got: dpb.DataRequest = await suite.data_rights.ApproveDataRequest(
        dpb.ApproveDataRequestRequest(name=name, request_id=next_request_id("bench-ok")),
        metadata=auth.officer,
        timeout=WAIT_COMPLETED_S,
    )
    synchronous = got.state == COMPLETED
    while got.state != COMPLETED:
        if time.perf_counter() - started > WAIT_COMPLETED_S:
            raise TimeoutError(f"{name} not COMPLETED: {dpb.DataRequestState.Name(got.state)}")
        await asyncio.sleep(0.005)
        got = await suite.data_rights.GetDataRequest(
            dpb.GetDataRequestRequest(name=name), metadata=auth.officer
        )
    return got, time.perf_counter() - started, synchronous


async def ready_request(
    suite: Suite, auth: Auth, member_id: str, kind: dpb.DataRequestType.ValueType
) -> str:
    """A request of the member's, identity verified: the next step is the approval."""
    created = await create(suite, member_id, kind, metadata=auth.wallet)
    await verify(suite, created.name)
    return created.name


@dataclass
class Download:
    seconds: float
    parts: int
    archive_bytes: int
    files: dict[str, int]  # unpacked: file name -> bytes
    csv_rows: int


async def download(suite: Suite, auth: Auth, name: str) -> Download:
    """One whole download (every part), timed; then unpacked (not timed) for the sizes."""
    parts: list[bytes] = []
    token = ""
    started = time.perf_counter()
    while True:
        part = await suite.data_rights.DownloadExport(
            dpb.DownloadExportRequest(name=f"{name}/export", page_token=token),
            metadata=auth.wallet,
            timeout=WAIT_COMPLETED_S,
        )
        parts.append(part.archive_part)
        token = part.next_page_token
        if not token:
            break
    seconds = time.perf_counter() - started
    archive = b"".join(parts)
    with zipfile.ZipFile(io.BytesIO(archive)) as unpacked:
        files = {n: unpacked.read(n) for n in unpacked.namelist()}
    csv_rows = files.get("ledger.csv", b"").count(b"\n") - 1  # less the header
    return Download(
        seconds, len(parts), len(archive), {n: len(b) for n, b in files.items()}, csv_rows
    )


@dataclass
class AccessRun:
    completed_s: float
    synchronous: bool
    download: Download

    @property
    def total_s(self) -> float:
        return self.completed_s + self.download.seconds


async def access_runs(suite: Suite, auth: Auth, member_id: str, runs: int) -> list[AccessRun]:
    done: list[AccessRun] = []
    progress = Progress("[3/5] ACCESS approve + download", runs)
    async with ticking(progress, runs, lambda: len(done)):
        for _ in range(runs):
            name = await ready_request(suite, auth, member_id, dpb.DATA_REQUEST_TYPE_ACCESS)
            _, seconds, synchronous = await approved(suite, auth, name)
            done.append(AccessRun(seconds, synchronous, await download(suite, auth, name)))
    return done


async def small_members(suite: Suite, members: int, payments: int) -> list[str]:
    progress = Progress(f"[1/5] members with {payments} transactions", members)
    member_ids: list[str] = []
    for _ in range(members):
        member_ids.append(await member_with_ledger(suite, payments))
        progress.update(len(member_ids))
    return member_ids


async def deletion_runs(
    suite: Suite, auth: Auth, member_ids: list[str]
) -> tuple[list[float], list[str], int]:
    """Latencies, deletion outcomes and how many finished within the call."""
    latencies: list[float] = []
    outcomes: list[str] = []
    synchronous = 0
    progress = Progress("[4/5] DELETION approve", len(member_ids))
    for member_id in member_ids:
        name = await ready_request(suite, auth, member_id, dpb.DATA_REQUEST_TYPE_DELETION)
        got, seconds, in_call = await approved(suite, auth, name)
        latencies.append(seconds)
        outcomes.append(dpb.DeletionOutcome.Name(got.deletion_outcome))
        synchronous += in_call
        progress.update(len(latencies))
    return latencies, outcomes, synchronous


def balance_of(suite: Suite, auth: Auth, member_ids: list[str]) -> Call:
    async def call(i: int) -> object:
        member_id = member_ids[i % len(member_ids)]
        return await suite.points.GetBalance(
            ppb.GetBalanceRequest(name=f"members/{member_id}/balance"), metadata=auth.officer
        )

    return call


# --- consent checks --------------------------------------------------------------------------


async def consenting_members(suite: Suite, auth: Auth, n: int) -> list[str]:
    """Registered members; every other one granted the consent purposes (so the checks
    answer both allowed and not)."""
    names: list[str] = []
    purposes = CONSENT_PURPOSES
    progress = Progress("[5/5] members with consents", n)
    for i in range(n):
        member = await register(suite)
        if i % 2 == 0:
            await suite.consent.GrantConsent(
                cpb.GrantConsentRequest(
                    member=member.name,
                    grants=[cpb.PurposeGrant(purpose=p, notice_version=1) for p in purposes],
                    channel=cpb.CHANNEL_APP,
                    request_id=next_request_id("bench-grant"),
                ),
                metadata=auth.wallet,
            )
        names.append(member.name)
        progress.update(len(names))
    return names


def consent_check(suite: Suite, auth: Auth, members: list[str]) -> Callable[[], Awaitable[object]]:
    calls = count()

    async def call() -> object:
        i = next(calls)
        return await suite.consent.CheckConsent(
            cpb.CheckConsentRequest(
                member=members[i % len(members)],
                purpose=CONSENT_PURPOSES[i % len(CONSENT_PURPOSES)],
            ),
            metadata=auth.wallet,
            timeout=30,
        )

    return call


def health_check(channel: grpc.aio.Channel) -> Callable[[], Awaitable[object]]:
    stub = health_pb2_grpc.HealthStub(channel)

    async def call() -> object:
        return await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)

    return call


async def timed_calls(
    label: str, callers: int, seconds: float, call: Callable[[], Awaitable[object]]
) -> tuple[list[float], float]:
    """`callers` loops calling `call` until the time is up; returns latencies and elapsed."""
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def caller() -> None:
        while (now := time.perf_counter()) < deadline:
            await call()
            latencies.append(time.perf_counter() - now)

    total = max(1, round(seconds))

    def elapsed() -> int:  # in whole seconds, as the progress line counts them
        return int((time.perf_counter() - started) / seconds * total)

    async with ticking(Progress(f"{label} (seconds)", total), total, elapsed):
        await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, time.perf_counter() - started


async def throughput(
    label: str, name: str, callers: int, seconds: float, call: Callable[[], Awaitable[object]]
) -> Result:
    await timed_calls(f"{label} warm-up", callers, min(1.0, seconds), call)
    latencies, elapsed = await timed_calls(label, callers, seconds, call)
    return summarise(name, latencies, elapsed, callers)


# --- report ----------------------------------------------------------------------------------


def _one(name: str, seconds: list[float], note: str = "") -> Result:
    result = summarise(name, seconds, sum(seconds), 1)
    # calls a minute long: summarise's one decimal would round the rate to 0
    result.throughput = len(seconds) / sum(seconds)
    result.note = note
    return result


def _verdict(seconds: float, target: float) -> str:
    return "meets" if seconds < target else "MISSES"


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.2f} MiB"


async def _run_suite(options: Options, suite: Suite) -> dict[str, Any]:
    auth = Auth(suite)
    member_id, preload_s = await member_with_history(suite, auth, options)
    small = await small_members(suite, options.deletions, options.deletion_payments)
    transactions = await ledger_size(suite.dsn, member_id)
    print(
        f"preloaded {transactions:,} transactions in {preload_s:.1f}s"
        f" ({(transactions - 1) / preload_s:,.0f}/s)",
        file=sys.stderr,
    )

    n = options.balance_calls
    balance = await measure(
        "GetBalance (same member)", balance_of(suite, auth, [member_id]), n, n // 10, 1, "[2/5]"
    )
    balance.note = "baseline of ACCESS: points' balance row + its soonest-expiring lots"
    balance_small = await measure(
        f"GetBalance ({options.deletion_payments}-txn members)",
        balance_of(suite, auth, small),
        n,
        n // 10,
        1,
        "[2/5]",
    )
    balance_small.note = "baseline of DELETION"

    runs = await access_runs(suite, auth, member_id, options.access_runs)
    completed = _one(
        "ACCESS approve -> COMPLETED",
        [r.completed_s for r in runs],
        "accounts export + ledger pages + bundle + zip + encrypt + store",
    )
    fetched = _one("ACCESS DownloadExport, all parts", [r.download.seconds for r in runs])
    whole = _one("ACCESS approve + download", [r.total_s for r in runs])

    deleted_s, outcomes, deleted_in_call = await deletion_runs(suite, auth, small)
    deletion = _one(
        f"DELETION approve -> COMPLETED ({options.deletion_payments} txns)",
        deleted_s,
        "destroy key + erase in accounts + restrict in points",
    )
    for result in (completed, fetched, whole):
        relate(result, balance)
    relate(deletion, balance_small)

    members = await consenting_members(suite, auth, options.consent_members)
    c, secs = options.callers, options.seconds
    noop = health_check(suite.privacy_channel)
    empty = await throughput("[5/5] health Check", "empty RPC (Health/Check)", c, secs, noop)
    empty.note = "baseline: health check on the privacy server, no token, no database"
    consent = await throughput(
        "[5/5] CheckConsent", "CheckConsent", c, secs, consent_check(suite, auth, members)
    )
    relate(consent, empty)

    last = runs[-1].download
    deletion_p95 = percentile(sorted(deleted_s), 0.95)
    access_median = statistics.median(r.completed_s for r in runs)
    total_median = statistics.median(r.total_s for r in runs)
    print()
    print(
        f"wallet-membership privacy benchmark — member with {transactions:,} ledger"
        f" transactions; {options.access_runs} ACCESS, {options.deletions} DELETION requests"
    )
    print(
        "baselines: GetBalance of the same members (ACCESS: the long ledger's; DELETION: the"
        " small ledgers'); every row 1 in flight"
    )
    print()
    print(table([balance, completed, fetched, whole, balance_small, deletion]))
    print()
    print(f"consent checks: {c} callers for {secs:g} s each (baseline: the empty RPC)")
    print(table([empty, consent]))
    print()
    print(
        f"ACCESS: approve -> COMPLETED median {access_median * 1000:,.0f} ms"
        f" ({_verdict(access_median, ACCESS_TARGET_S)} the {ACCESS_TARGET_S:g} s target;"
        f" {sum(r.synchronous for r in runs)}/{len(runs)} completed within the call);"
        f" with the download {total_median * 1000:,.0f} ms"
        f" ({_verdict(total_median, ACCESS_TARGET_S)} the target);"
        f" {completed.ratio_p50:,.0f}x GetBalance"
    )
    print(
        f"  archive {_mib(last.archive_bytes)} in {last.parts} part(s); bundle"
        f" {_mib(sum(last.files.values()))} unpacked ("
        + ", ".join(f"{n} {_mib(b)}" for n, b in last.files.items())
        + f"); ledger.csv rows {last.csv_rows:,}"
    )
    print(
        f"DELETION: median {deletion.p50_ms:,.1f} ms, p95 {deletion_p95 * 1000:,.1f} ms"
        f" ({_verdict(deletion_p95, DELETION_TARGET_S)} the {DELETION_TARGET_S * 1000:g} ms"
        f" target); {deletion.ratio_p50:,.1f}x GetBalance;"
        f" {deleted_in_call}/{len(deleted_s)} completed within the call;"
        f" outcomes {sorted(set(outcomes))}"
    )
    print(
        f"CheckConsent: {consent.throughput:,.0f}/s, {consent.ratio_throughput:.2f}x slower"
        f" than the empty RPC ({empty.throughput:,.0f}/s)"
    )
    print(
        "\nx slower = baseline throughput / row throughput; x p50 = row p50 / baseline p50."
        "\nClient and servers share one process and event loop (in-process suite, like the"
        " service tests);\nDB pools of the test settings"
        f" ({suite.settings.db_pool_max} connections per service); request logging off."
    )
    return {
        "benchmark": "privacy",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            "db_pool_max_per_service": suite.settings.db_pool_max,
            "setup": "in-process suite (tests/support/suite.running_suite), embedded PostgreSQL",
        },
        "machine": machine_info(),
        "preload": {
            "ledger_transactions": transactions,
            "seconds": round(preload_s, 2),
            "per_second": round((transactions - 1) / preload_s, 1),
        },
        "access": {
            "target_s": ACCESS_TARGET_S,
            "completed_median_s": round(access_median, 4),
            "with_download_median_s": round(total_median, 4),
            "ratio_to_get_balance_p50": completed.ratio_p50,
            "runs": [
                {
                    "completed_s": round(r.completed_s, 4),
                    "completed_within_call": r.synchronous,
                    "download": asdict(r.download),
                }
                for r in runs
            ],
        },
        "deletion": {
            "target_s": DELETION_TARGET_S,
            "median_s": round(statistics.median(deleted_s), 4),
            "p95_s": round(deletion_p95, 4),
            "ratio_to_get_balance_p50": deletion.ratio_p50,
            "completed_within_call": deleted_in_call,
            "outcomes": outcomes,
        },
        "consent": {"ratio_throughput_to_empty_rpc": consent.ratio_throughput},
        "results": [
            asdict(r) for r in (balance, completed, fetched, whole, balance_small, deletion)
        ],
        "throughput_baseline": empty.name,
        "throughput_results": [asdict(r) for r in (empty, consent)],
    }


# --- main ------------------------------------------------------------------------------------


async def run(options: Options, dsn: str) -> dict[str, Any]:
    keys_dir = Path(tempfile.mkdtemp(prefix="wm-bench-keys-"))
    try:
        async with running_suite(dsn, keys_dir) as suite:
            return await _run_suite(options, suite)
    finally:
        shutil.rmtree(keys_dir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_privacy", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--transactions", type=int, default=100_000, help="ledger of (a), (b)")
    parser.add_argument("--batch", type=int, default=500, help="payments per SettlePayments")
    parser.add_argument("--preload-callers", type=int, default=2, help="batches in flight")
    parser.add_argument("--access-runs", type=int, default=3, help="ACCESS requests")
    parser.add_argument("--deletions", type=int, default=20, help="DELETION requests")
    parser.add_argument("--deletion-payments", type=int, default=5, help="their transactions")
    parser.add_argument("--balance-calls", type=int, default=500, help="GetBalance calls")
    parser.add_argument("--callers", type=int, default=32, help="concurrent consent checks")
    parser.add_argument("--seconds", type=float, default=5.0, help="per throughput row")
    parser.add_argument("--consent-members", type=int, default=200, help="members checked")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    if not 2 <= args.transactions <= 1_000_000:
        parser.error("--transactions must be between 2 and 1000000")
    if not 1 <= args.batch <= 500:
        parser.error("--batch must be between 1 and 500 (SettlePayments' limit)")
    positive = (
        "preload_callers",
        "access_runs",
        "deletions",
        "deletion_payments",
        "balance_calls",
        "callers",
        "consent_members",
    )
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    return Options(
        transactions=args.transactions,
        batch=args.batch,
        preload_callers=args.preload_callers,
        access_runs=args.access_runs,
        deletions=args.deletions,
        deletion_payments=args.deletion_payments,
        balance_calls=args.balance_calls,
        callers=args.callers,
        seconds=args.seconds,
        consent_members=args.consent_members,
        output=args.output,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    sys.stderr.write("starting embedded PostgreSQL and the services...\n")
    postgres = PostgresForTests()
    try:
        dsn = asyncio.run(postgres.new_database())
        # the services run on uvloop in production (services/runtime/server.py)
        report = uvloop.run(run(options, dsn))
    finally:
        postgres.close()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {options.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
