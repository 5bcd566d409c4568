"""How many members consent to each purpose, for compliance officers.

The figures come from one aggregate over the latest consent record of every member and
purpose. That scan grows with the number of members, so its result is kept for
`ttl_s` (a failure for up to FAILURE_TTL_S) and concurrent callers share one computation:
a console left open cannot turn into a stream of full scans.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import asyncpg

from services.privacy.domain.consent_statistics import ConsentStatistics, summarise
from services.privacy.domain.purpose_catalogue import Catalogue
from services.privacy.store import consent as consent_store
from services.runtime.errors import Code, DomainError

DEFAULT_TTL_S = 60.0
# below the gateway's default request timeout (10 s), so an answer can reach the console
QUERY_TIMEOUT_S = 8.0
STATISTICS_TIMEOUT = "STATISTICS_TIMEOUT"
# a failed computation is remembered this long, so callers do not start scan after scan
FAILURE_TTL_S = 10.0


class ConsentStatisticsCache:
    def __init__(self, pool: asyncpg.Pool, catalogue: Catalogue, ttl_s: float = DEFAULT_TTL_S):
        self._pool = pool
        self._catalogue = catalogue
        self._ttl_s = ttl_s
        self._computing: asyncio.Task[ConsentStatistics] | None = None
        self._done_at = 0.0

    async def get(self) -> ConsentStatistics:
        """The cached figures, or those of the one computation running now. The computation
        is a task of its own: a caller whose deadline passes stops waiting, but does not
        cancel the scan the next caller will use."""
        task = self._computing
        if task is None or self._expired(task):
            task = asyncio.create_task(self._compute(), name="consent-statistics")
            task.add_done_callback(self._finished)
            self._computing = task
        return await asyncio.shield(task)

    async def close(self) -> None:
        """Stops a computation still running (the service is shutting down)."""
        task, self._computing = self._computing, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, DomainError):
                await task

    def _expired(self, task: asyncio.Task[ConsentStatistics]) -> bool:
        if not task.done():
            return False
        failed = task.cancelled() or task.exception() is not None
        ttl_s = min(FAILURE_TTL_S, self._ttl_s) if failed else self._ttl_s
        return time.monotonic() - self._done_at >= ttl_s

    def _finished(self, task: asyncio.Task[ConsentStatistics]) -> None:
        self._done_at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved here: a failure is answered to every waiter

    async def _compute(self) -> ConsentStatistics:
        at = datetime.now(UTC)
        try:
            async with self._pool.acquire() as conn:
                counts = await consent_store.consent_tallies(conn, QUERY_TIMEOUT_S)
        except asyncpg.QueryCanceledError as exc:
            raise DomainError(
                Code.DEADLINE_EXCEEDED,
                STATISTICS_TIMEOUT,
                f"consent statistics took longer than {QUERY_TIMEOUT_S:.0f} s",
            ) from exc
        return summarise(self._catalogue, counts.tallies, counts.members, at)
