"""How many members consent to each purpose, for compliance officers.

The figures come from one aggregate over the latest consent record of every member and
purpose. That scan grows with the number of members, so its result is kept for
`ttl_s` and concurrent callers share one computation: a console left open cannot turn into a
stream of full scans.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.privacy import store_consent
from services.privacy.consent import GRANT, WITHDRAW
from services.privacy.purpose_catalogue import Catalogue, Purpose
from services.privacy.store_consent import ConsentTally
from services.runtime.errors import Code, DomainError

DEFAULT_TTL_S = 60.0
QUERY_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class PurposeStatistics:
    purpose_code: str
    granted_members: int  # granted and not stale
    stale_members: int
    withdrawn_members: int
    not_given_members: int


@dataclass(frozen=True)
class ConsentStatistics:
    purposes: list[PurposeStatistics]  # catalogue order
    members: int
    compute_time: datetime


def summarise(
    catalogue: Catalogue, tallies: Sequence[ConsentTally], members: int, at: datetime
) -> ConsentStatistics:
    """Tallies by (purpose, action, notice version) into counts by status per purpose."""
    by_purpose = {code: [0, 0, 0] for code in catalogue.purposes}  # granted, stale, withdrawn
    for t in tallies:
        counts = by_purpose.get(t.purpose_code)
        purpose = catalogue.get(t.purpose_code)
        if counts is None or purpose is None:
            continue  # a purpose no longer in the catalogue
        counts[_slot(purpose, t)] += t.members
    return ConsentStatistics(
        [
            PurposeStatistics(code, g, s, w, max(members - g - s - w, 0))
            for code, (g, s, w) in by_purpose.items()
        ],
        members,
        at,
    )


def _slot(purpose: Purpose, tally: ConsentTally) -> int:
    if tally.action == WITHDRAW:
        return 2
    assert tally.action == GRANT, tally.action
    return 1 if purpose.is_stale(tally.notice_version) else 0


class ConsentStatisticsCache:
    def __init__(self, pool: asyncpg.Pool, catalogue: Catalogue, ttl_s: float = DEFAULT_TTL_S):
        self._pool = pool
        self._catalogue = catalogue
        self._ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._cached: tuple[float, ConsentStatistics] | None = None

    async def get(self) -> ConsentStatistics:
        async with self._lock:  # one scan at a time; waiters take its result
            if self._cached is not None and time.monotonic() - self._cached[0] < self._ttl_s:
                return self._cached[1]
            statistics = await self._compute()
            self._cached = (time.monotonic(), statistics)
            return statistics

    async def _compute(self) -> ConsentStatistics:
        at = datetime.now(UTC)
        try:
            async with self._pool.acquire() as conn:
                tallies, members = await store_consent.consent_tallies(conn, QUERY_TIMEOUT_S)
        except asyncpg.QueryCanceledError as exc:
            raise DomainError(
                Code.DEADLINE_EXCEEDED,
                "STATISTICS_TIMEOUT",
                f"consent statistics took longer than {QUERY_TIMEOUT_S:.0f} s",
            ) from exc
        return summarise(self._catalogue, tallies, members, at)
