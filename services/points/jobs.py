"""Background work of the points service: the jobs, how one run of them goes, and the loop.

A job is a name and a batch function `(conn, now, limit) -> BatchResult` that does at most
`limit` items inside the transaction it is given. The runner wraps each batch in its own
transaction holding the job's advisory lock (`pg_try_advisory_xact_lock`): a replica that
does not get it skips the job, so several replicas never do the same work, and a crashed
runner never leaves a lock behind. Runs are bounded (batch size, batches per run) and
idempotent: whatever a batch did is no longer due, so a second run at the same `now` finds
nothing. Adding a job (hold expiry, tier review) is one batch function and one JOBS entry.

The clock is the caller's: the service loop passes the system time, `membership points
run-jobs --now` the operator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.points import metrics
from services.points.coupons import issue_campaign_coupons
from services.points.domain.jobs import (
    EXPIRY,
    MATURATION,
    UNKNOWN_MEMBER_RETENTION,
    BatchResult,
    JobLimits,
    JobName,
    JobReport,
    LotChange,
    LotKey,
    balance_deltas,
    lot_move,
    repayments,
)
from services.points.referrals import pay_referral_bonuses
from services.points.spending import expire_due_holds
from services.points.store import balance as balance_store
from services.points.store import coupons as coupon_store
from services.points.store import jobs as job_store
from services.points.store import ledger as ledger_store
from services.points.store import unknown_members as unknown_store
from services.points.tiers import review_tiers
from services.runtime.db import Conn, in_transaction

log = logging.getLogger("membership.points.jobs")

BatchFn = Callable[[Conn, datetime, int], Awaitable[BatchResult]]


async def expire_coupons(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Coupons past their end become EXPIRED; reservations past theirs end (the coupon is
    ISSUED again, its payment kept for a late settlement)."""
    seen, done = await coupon_store.expire_due(conn, now, limit)
    return BatchResult(seen, done)


@dataclass(frozen=True)
class Job:
    name: JobName
    batch: BatchFn


async def _lot_batch(change: LotChange, conn: Conn, now: datetime, limit: int) -> BatchResult:
    keys = await job_store.due_lot_keys(conn, change.kind, now, limit)
    if not keys:
        return BatchResult(0, 0)
    available = await balance_store.lock_balances(conn, [k.member_id for k in keys])
    lots = await job_store.lock_due_lots(conn, change.kind, now, keys)
    # a lot refunded to nothing while pending, or spent or held to nothing before its
    # expiry, has no points to move, only a state
    empty = [LotKey(lot.member_id, lot.lot_id) for lot in lots if lot.remaining == 0]
    await job_store.mark_lots(conn, empty, change.new_state)
    moving = [lot for lot in lots if lot.remaining > 0]
    ids = await ledger_store.next_ids(conn, 2 * len(moving)) if moving else []
    repaid = repayments(change, moving, available)
    moves = [
        lot_move(change, lot, now, txn_id=ids[2 * i], transfer_id=ids[2 * i + 1], repaid=repaid[i])
        for i, lot in enumerate(moving)
    ]
    await job_store.record_moves(conn, moves, balance_deltas(change, moving))
    forfeited = 0 if change.keeps_points else sum(lot.remaining for lot in moving)
    return BatchResult(len(keys), len(lots), forfeited)


async def mature_lots(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Pending lots whose return window ended become available."""
    return await _lot_batch(MATURATION, conn, now, limit)


async def expire_lots(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Available lots past their expiry lose what is left of them."""
    return await _lot_batch(EXPIRY, conn, now, limit)


async def purge_unknown_members(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Forgets refused member ids that arrived, or that nobody asked about for a while."""
    purged = await unknown_store.purge(conn, now - UNKNOWN_MEMBER_RETENTION, limit)
    return BatchResult(purged, purged)


# in this order: a lot that matures and expires in the same run ends expired, and points an
# expired hold gives back to a lot expire with it
JOBS: tuple[Job, ...] = (
    Job(JobName.MATURATION, mature_lots),
    # holds neither captured nor released by their expire_time give their points back
    Job(JobName.HOLD_EXPIRY, expire_due_holds),
    Job(JobName.EXPIRY, expire_lots),
    Job(JobName.TIER_REVIEW, review_tiers),
    # referral bonuses made due by referees' first settlements are paid to both sides
    Job(JobName.REFERRAL_BONUS, pay_referral_bonuses),
    Job(JobName.UNKNOWN_MEMBER_PURGE, purge_unknown_members),
    Job(JobName.CAMPAIGN_COUPONS, issue_campaign_coupons),
    Job(JobName.COUPON_EXPIRY, expire_coupons),
)


class JobRunner:
    def __init__(
        self, pool: asyncpg.Pool, jobs: Sequence[Job] = JOBS, limits: JobLimits | None = None
    ) -> None:
        self._pool = pool
        self._jobs = tuple(jobs)
        self._limits = limits or JobLimits()

    async def run_once(self, now: datetime) -> list[JobReport]:
        """Each job once at `now`, one after the other."""
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        return [await self.run_job(job, now) for job in self._jobs]

    async def run_job(self, job: Job, now: datetime) -> JobReport:
        done = batches = 0
        limit = self._limits.batch_size
        while batches < self._limits.max_batches:

            async def work(conn: Conn) -> BatchResult | None:
                if not await job_store.try_job_lock(conn, job.name):
                    return None
                return await job.batch(conn, now, limit)

            result = await in_transaction(self._pool, work)
            if result is None:
                return JobReport(job.name, done, batches, skipped=True, more_left=False)
            metrics.POINTS_EXPIRED.inc(result.forfeited)  # committed: counted once
            metrics.POINTS_ISSUED.labels(metrics.ISSUED_BY_REFERRAL).inc(result.issued)
            batches, done = batches + 1, done + result.done
            if result.seen < limit:
                metrics.job_succeeded(job.name)
                return JobReport(job.name, done, batches, skipped=False, more_left=False)
        metrics.job_succeeded(job.name)  # ran as far as one run may
        return JobReport(job.name, done, batches, skipped=False, more_left=True)


class JobLoop:
    """Runs the jobs at the clock's time every `interval_s` seconds, until stopped."""

    def __init__(self, runner: JobRunner, clock: Callable[[], datetime], interval_s: float) -> None:
        self._runner = runner
        self._clock = clock
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="points-jobs")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # a batch cut short rolls back; the next run (of any replica) does it again
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            await self._tick()
            await asyncio.sleep(self._interval_s)

    async def _tick(self) -> None:
        try:
            reports = await self._runner.run_once(self._clock())
        except Exception:
            # a failed run (database away, conflict) must not end the loop: the next may work
            log.exception("points jobs failed")
            return
        done = {r.job: r.done for r in reports if r.done}
        if done:
            log.info("points jobs ran", extra={"fields": {"done": done}})
