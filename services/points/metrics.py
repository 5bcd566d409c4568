"""The points service's own metrics: committed settlements, refunds and point movements,
and how far its background jobs lag.

Counters move only after the transaction that did the work committed, and never for a
replay (a repeated idempotency key answers with the first result and changes nothing).
Labels are bounded sets: outcomes, job names, error reasons from the code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from services.points.domain.refunds import RefundResult
from services.points.domain.settlement import ItemOutcome
from services.points.store import jobs as job_store
from services.points.store import unknown_members as unknown_store
from services.runtime.db import Conn
from services.runtime.scrape import Probe, Samples

# the sources of membership_points_issued_total
ISSUED_BY_SETTLEMENT = "settlement"
ISSUED_BY_GRANT = "grant"
ISSUED_BY_REFERRAL = "referral"

SETTLEMENTS = Counter(
    "membership_points_settlements_total",
    "Settled payments, by outcome (earned, no_points, replayed, rejected)",
    ["outcome"],
)
REFUNDS = Counter(
    "membership_points_refunds_total",
    "Refunds, by outcome (clawed_back, written_off, replayed)",
    ["outcome"],
)
POINTS_ISSUED = Counter(
    "membership_points_issued_total",
    "Points credited to members, by source (settlement, grant, referral)",
    ["source"],
)
POINTS_REDEEMED = Counter("membership_points_redeemed_total", "Points spent by members")
POINTS_EXPIRED = Counter("membership_points_expired_total", "Points forfeited by expiry")
POINTS_CLAWED_BACK = Counter("membership_points_clawed_back_total", "Points taken back by refunds")
JOB_LAST_SUCCESS = Gauge(
    "membership_points_job_last_success_timestamp_seconds",
    "When this process last finished a job run without error (Unix time)",
    ["job"],
)
JOB_SINCE_SUCCESS = Gauge(
    "membership_points_job_seconds_since_success",
    "Seconds since this process last finished a job run without error",
    ["job"],
)

SETTLEMENT_BATCH_SIZE = Histogram(
    "membership_points_settlement_batch_size",
    "Payments per settlement transaction (a SettlePayments call, or single calls coalesced)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)

_last_success: dict[str, float] = {}

# bound once: settled() runs for every payment of every batch
_REJECTED, _REPLAYED = SETTLEMENTS.labels("rejected"), SETTLEMENTS.labels("replayed")
_EARNED, _NO_POINTS = SETTLEMENTS.labels("earned"), SETTLEMENTS.labels("no_points")
_ISSUED_BY_SETTLEMENT = POINTS_ISSUED.labels(ISSUED_BY_SETTLEMENT)


def settled(outcomes: Sequence[ItemOutcome]) -> None:
    """After the batch committed."""
    SETTLEMENT_BATCH_SIZE.observe(len(outcomes))
    for outcome in outcomes:
        if outcome.result is None:
            _REJECTED.inc()
        elif outcome.replayed:
            _REPLAYED.inc()
        elif outcome.result.points > 0:
            _EARNED.inc()
            _ISSUED_BY_SETTLEMENT.inc(outcome.result.points)
        else:
            _NO_POINTS.inc()


def refunded(result: RefundResult, replayed: bool) -> None:
    """After the refund committed."""
    if replayed:
        REFUNDS.labels("replayed").inc()
        return
    REFUNDS.labels("written_off" if result.points_uncollectable else "clawed_back").inc()
    POINTS_CLAWED_BACK.inc(result.points_clawed_back)


def job_succeeded(job: str) -> None:
    now = time.time()
    JOB_LAST_SUCCESS.labels(job).set(now)
    if job not in _last_success:
        # read at scrape time, so the lag grows between runs without anyone setting it
        JOB_SINCE_SUCCESS.labels(job).set_function(lambda: time.time() - _last_success[job])
    _last_success[job] = now


async def _oldest_due(conn: Conn) -> Samples:
    return [((job,), age) for job, age in (await job_store.oldest_due(conn)).items()]


async def _unknown_members(conn: Conn) -> Samples:
    counts = await unknown_store.counts(conn)
    return [(("waiting",), float(counts.waiting)), (("given_up",), float(counts.given_up))]


PROBES = (
    Probe(
        "membership_points_job_oldest_due_seconds",
        "How long the oldest item a job should have handled has been due (0: none)",
        ("job",),
        _oldest_due,
    ),
    Probe(
        "membership_points_unknown_members",
        "Member ids whose writes points refused because accounts had not announced them:"
        " still answered 'retry' (waiting) or refused for good after the grace (given_up)",
        ("state",),
        _unknown_members,
    ),
)
