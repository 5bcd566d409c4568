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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.points import metrics
from services.points.ledger_accounts import EXPIRED, MEMBER_AVAILABLE, MEMBER_PENDING
from services.points.referrals import pay_referral_bonuses
from services.points.spending import expire_due_holds
from services.points.store import jobs as store
from services.points.store import tiers as tier_store
from services.points.store import unknown_members as unknown_store
from services.points.store.ledger import next_ids
from services.points.tier_review import review_due
from services.runtime.db import Conn, in_transaction

log = logging.getLogger("membership.points.jobs")

DEFAULT_BATCH_SIZE = 500
# a run stops after this many batches even if work is left; the next run goes on
DEFAULT_MAX_BATCHES = 40
# a member id refused for good is kept this long after its last refusal (for the metric and
# for a caller that still retries it); a later write for it starts a new grace period
UNKNOWN_MEMBER_RETENTION = timedelta(days=30)


@dataclass(frozen=True)
class BatchResult:
    seen: int  # candidates found: fewer than the limit means nothing more is due
    done: int  # items changed
    forfeited: int = 0  # points that expired
    issued: int = 0  # points credited (referral bonuses)


BatchFn = Callable[[Conn, datetime, int], Awaitable[BatchResult]]


@dataclass(frozen=True)
class Job:
    name: str
    batch: BatchFn


@dataclass(frozen=True)
class JobLimits:
    batch_size: int = DEFAULT_BATCH_SIZE
    max_batches: int = DEFAULT_MAX_BATCHES


@dataclass(frozen=True)
class JobReport:
    job: str
    done: int
    batches: int
    skipped: bool  # another runner held the job's lock
    more_left: bool  # stopped at max_batches with work still due

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "done": self.done,
            "batches": self.batches,
            "skipped": self.skipped,
            "more_left": self.more_left,
        }


@dataclass(frozen=True)
class LotChange:
    """What a lot job does to each due lot."""

    kind: str  # the job name, the transaction kind and the idempotency key prefix
    from_account: str
    to_account: str
    new_state: str
    # (available, pending) change of the balance per point moved
    balance_sign: tuple[int, int]
    sentence: str  # with {points}, {lot_id} and {date}
    date_of: Callable[[store.DueLot], datetime] = field(repr=False)
    # a matured lot keeps its points (less what repays a debt); an expired one keeps none
    keeps_points: bool = True


MATURATION = LotChange(
    "maturation",
    MEMBER_PENDING,
    MEMBER_AVAILABLE,
    "AVAILABLE",
    (1, -1),
    "The return window of lot {lot_id} ended at {date}: {points} points became available.",
    lambda lot: lot.available_at,
)
EXPIRY = LotChange(
    "expiry",
    MEMBER_AVAILABLE,
    EXPIRED,
    "EXPIRED",
    (-1, 0),
    "Lot {lot_id} expired at {date}: its {points} unspent points were forfeited.",
    lambda lot: lot.expires_at,
    keeps_points=False,
)


def _move(
    change: LotChange, lot: store.DueLot, now: datetime, ids: tuple[int, int], repaid: int
) -> store.LotMove:
    date = change.date_of(lot).isoformat()
    lot_doc = {
        "lot_id": lot.lot_id,
        "earned_by_txn_id": lot.txn_id,
        "points": lot.points,
        "remaining": lot.remaining,
        "earned_at": lot.earned_at.isoformat(),
        "available_at": lot.available_at.isoformat(),
        "expires_at": lot.expires_at.isoformat(),
    }
    sentence = change.sentence.format(points=lot.remaining, lot_id=lot.lot_id, date=date)
    if repaid:
        sentence += f" The first {repaid} of them repaid the member's negative balance."
    result = {"lot_id": lot.lot_id, "points": lot.remaining, "state": change.new_state}
    result |= {"from": change.from_account, "to": change.to_account, "run_at": now.isoformat()}
    explanation = {
        "kind": change.kind,
        "rule_version": lot.rule_version,
        "lot": lot_doc,
        "run_at": now.isoformat(),
        "steps": [{"name": change.kind, "value": str(lot.remaining), "note": sentence}],
        "points": lot.remaining,
        "debt_repaid": repaid,
        "sentence": sentence,
    }
    return store.LotMove(
        lot,
        ids[0],
        ids[1],
        change.kind,
        f"{change.kind}:{lot.lot_id}",
        change.from_account,
        change.to_account,
        change.new_state,
        lot.remaining - repaid if change.keeps_points else 0,
        # as the member's available balance sees it: matured points arrive, expired leave
        lot.remaining * change.balance_sign[0],
        result,
        explanation,
    )


def _deltas(change: LotChange, lots: Sequence[store.DueLot]) -> store.BalanceDeltas:
    deltas: store.BalanceDeltas = {}
    for lot in lots:
        available, pending = deltas.get(lot.member_id, (0, 0))
        deltas[lot.member_id] = (
            available + change.balance_sign[0] * lot.remaining,
            pending + change.balance_sign[1] * lot.remaining,
        )
    return deltas


def _repayments(
    change: LotChange, lots: Sequence[store.DueLot], available: dict[str, int]
) -> list[int]:
    """How much of each lot repays its member's debt (allow_negative policy).

    Debt is `-available` when negative, and no available lot may hold points while there is
    one (services/points/debt.py): maturing points pay it off first, lot by lot."""
    owed = {member: max(0, -points) for member, points in available.items()}
    repaid = []
    for lot in lots:
        part = min(lot.remaining, owed.get(lot.member_id, 0)) if change.keeps_points else 0
        owed[lot.member_id] = owed.get(lot.member_id, 0) - part
        repaid.append(part)
    return repaid


async def _lot_batch(change: LotChange, conn: Conn, now: datetime, limit: int) -> BatchResult:
    keys = await store.due_lot_keys(conn, change.kind, now, limit)
    if not keys:
        return BatchResult(0, 0)
    available = await store.lock_balances(conn, [member_id for member_id, _ in keys])
    lots = await store.lock_due_lots(conn, change.kind, now, keys)
    # a lot refunded to nothing while pending, or spent or held to nothing before its
    # expiry, has no points to move, only a state
    empty = [(lot.member_id, lot.lot_id) for lot in lots if lot.remaining == 0]
    await store.mark_lots(conn, empty, change.new_state)
    moving = [lot for lot in lots if lot.remaining > 0]
    ids = await next_ids(conn, 2 * len(moving)) if moving else []
    repaid = _repayments(change, moving, available)
    moves = [
        _move(change, lot, now, (ids[2 * i], ids[2 * i + 1]), repaid[i])
        for i, lot in enumerate(moving)
    ]
    await store.record_moves(conn, moves, _deltas(change, moving))
    forfeited = 0 if change.keeps_points else sum(lot.remaining for lot in moving)
    return BatchResult(len(keys), len(lots), forfeited)


async def mature_lots(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Pending lots whose return window ended become available."""
    return await _lot_batch(MATURATION, conn, now, limit)


async def expire_lots(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Available lots past their expiry lose what is left of them."""
    return await _lot_batch(EXPIRY, conn, now, limit)


async def expire_holds(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Holds neither captured nor released by their expire_time give their points back."""
    seen, expired = await expire_due_holds(conn, now, limit)
    return BatchResult(seen, expired)


async def review_tiers(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Tiers whose review (or grace end) is due: kept and reviewed again a window later,
    given their grace period, or lowered to what the window's points reach."""
    due = await tier_store.due_reviews(conn, now, limit)
    if not due:
        return BatchResult(0, 0)
    return BatchResult(len(due), await review_due(conn, due, now))


async def pay_referrals(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Referral bonuses made due by referees' first settlements are paid to both sides."""
    seen, paid, points = await pay_referral_bonuses(conn, now, limit)
    return BatchResult(seen, paid, issued=points)


async def purge_unknown_members(conn: Conn, now: datetime, limit: int) -> BatchResult:
    """Forgets refused member ids that arrived, or that nobody asked about for a while."""
    purged = await unknown_store.purge(conn, now - UNKNOWN_MEMBER_RETENTION, limit)
    return BatchResult(purged, purged)


# in this order: a lot that matures and expires in the same run ends expired, and points an
# expired hold gives back to a lot expire with it
JOBS: tuple[Job, ...] = (
    Job("maturation", mature_lots),
    Job("hold_expiry", expire_holds),
    Job("expiry", expire_lots),
    Job("tier_review", review_tiers),
    Job("referral_bonus", pay_referrals),
    Job("unknown_member_purge", purge_unknown_members),
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
                if not await store.try_job_lock(conn, job.name):
                    return None
                return await job.batch(conn, now, limit)

            result = await in_transaction(self._pool, work)
            if result is None:
                return JobReport(job.name, done, batches, skipped=True, more_left=False)
            metrics.POINTS_EXPIRED.inc(result.forfeited)  # committed: counted once
            metrics.POINTS_ISSUED.labels("referral").inc(result.issued)
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
