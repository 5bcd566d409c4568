"""`membership points run-jobs --now TIME`: the points service's background jobs, run once.

For tests and operators: it connects to the database (DATABASE_URL, else the embedded
PostgreSQL under --data-dir, as `membership run` does), applies no migration, runs each job
once at the given time, and prints what each did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from membership_cli import launcher
from membership_cli.errors import EXIT_FAILURE, EXIT_OK, CliError, usage_error
from services.points.domain.jobs import JobLimits, JobReport
from services.points.jobs import JobRunner
from services.runtime.db import create_pool

RUN_JOBS_EPILOG = """\
examples:
  membership points run-jobs --now 2030-01-01T00:00:00Z
  membership points run-jobs --now "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --json
  DATABASE_URL=postgresql://... membership points run-jobs --now 2030-01-01T08:00:00+08:00

Jobs: maturation (pending lots past their return window become available), expiry (lots past
their expiry lose what is left). Each job takes its advisory lock, so running this while the
service runs is safe: whichever gets a job's lock does it, and nothing is done twice.
The points schema must exist (start the points service once); nothing is migrated here.

exit codes:
  0  success (every job ran, or another runner held its lock)
  1  runtime failure (database unreachable, schema missing)
  2  usage or configuration error (e.g. a --now without a time zone)
"""


def parse_now(raw: str) -> datetime:
    """ISO 8601 with a time zone; `Z` for UTC."""
    try:
        value = datetime.fromisoformat(raw.strip().replace("z", "Z"))
    except ValueError as exc:
        raise usage_error(f"--now {raw!r} is not an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise usage_error(f"--now {raw!r} has no time zone (add Z or +08:00)")
    return value.astimezone(UTC)


async def _schema_ready(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT to_regclass('points.lots') IS NOT NULL"))


async def run_jobs(dsn: str, now: datetime, limits: JobLimits) -> list[JobReport]:
    try:
        pool = await create_pool(dsn, 1, 2)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CliError(f"cannot connect to the database ({type(exc).__name__})") from exc
    try:
        if not await _schema_ready(pool):
            raise CliError("the points schema is missing; start the points service once")
        return await JobRunner(pool, limits=limits).run_once(now)
    finally:
        await pool.close()


def _print(reports: list[JobReport], now: datetime, as_json: bool) -> None:
    if as_json:
        doc = {"now": now.isoformat(), "jobs": {r.job: r.to_json() for r in reports}}
        print(json.dumps(doc))
        return
    for r in reports:
        state = "skipped (another runner holds it)" if r.skipped else f"{r.done} done"
        more = ", more left for the next run" if r.more_left else ""
        print(f"{r.job:<11} {state} in {r.batches} batch(es){more}")


def cmd_run_jobs(args: argparse.Namespace) -> int:
    now = parse_now(args.now)
    limits = JobLimits(batch_size=args.batch_size, max_batches=args.max_batches)
    data_dir = launcher.prepare_data_dir(Path(args.data_dir))
    with launcher.database(data_dir, os.environ) as db:
        try:
            reports = asyncio.run(run_jobs(db.url, now, limits))
        except asyncpg.PostgresError as exc:
            raise CliError(f"a job failed: {type(exc).__name__}: {exc}") from exc
    _print(reports, now, args.json)
    return EXIT_OK if reports else EXIT_FAILURE


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from exc
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def add_points(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`membership points ...`: operator commands of the points service."""
    points = subparsers.add_parser(
        "points", help="points service operations", description="Points service operations."
    )
    commands = points.add_subparsers(dest="points_command", required=True, metavar="COMMAND")
    summary = "run the points background jobs once at a given time"
    parser = commands.add_parser(
        "run-jobs",
        help=summary,
        description=summary,
        epilog=RUN_JOBS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=cmd_run_jobs)
    parser.add_argument("--now", required=True, help="the jobs' time, ISO 8601 with a zone")
    parser.add_argument(
        "--data-dir", default=str(launcher.DEFAULT_DATA_DIR), help="default %(default)s"
    )
    parser.add_argument("--batch-size", type=_bounded_int(1, 5000), default=JobLimits().batch_size)
    parser.add_argument(
        "--max-batches", type=_bounded_int(1, 100_000), default=JobLimits().max_batches
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
