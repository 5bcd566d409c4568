"""Fulfilment of approved data-subject requests, step by step, resumable.

An approved request is IN_PROGRESS with its type's steps (data_requests.STEPS). A run takes
the request's lock, does each step not yet done, marks it done, and completes the request
after the last. Every step is idempotent (the other services' calls carry request ids derived
from the data request's), so a step that ran but was not marked (a crash) runs again safely.
A step that fails because a service is down or slow is retried later with backoff, by the
background resumer or by repeating the approval; a refusal (bad data, a conflict, the
member's status), or retries used up, stops the request: it stays IN_PROGRESS with its
`step_failure` (step, service, code, reason, field names) and a `fulfilment.stopped` timeline
entry, for an officer to reject it with a reason or approve it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.privacy import data_requests as rules
from services.privacy import store_requests
from services.privacy.data_rights import PRIVACY_CALLER, DataRights, RequestView, record
from services.privacy.erasure_journal import ErasureJournal, JournalEntry
from services.privacy.member_services import ServiceCallError
from services.privacy.request_steps import StepExecutor
from services.privacy.store_requests import RequestRow, Step
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import Code, DomainError, not_found
from services.runtime.identity import Caller

log = logging.getLogger("membership.privacy.fulfilment")

MAX_ATTEMPTS = 20
# how long an approval's own run has the request before the resumer may take it over
RUN_LEASE = timedelta(seconds=30)
TRANSIENT_CODES = frozenset(
    {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.RESOURCE_EXHAUSTED}
)
BACKOFF_MAX = timedelta(minutes=10)
RESUME_POLL_S = 2.0
RESUME_BATCH = 20


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF_MAX, timedelta(seconds=2 ** min(attempts, 12)))


@dataclass(frozen=True)
class Failure:
    """What a step's failure records: who, the status code and reason, the fields refused;
    never a message (it could quote a value). `transient`: a later attempt may succeed."""

    summary: str
    service: str
    code: str
    transient: bool
    reason: str = ""
    fields: tuple[str, ...] = ()

    def stopped(self, step: str, retries_exhausted: bool, at: datetime) -> dict[str, Any]:
        """The request's `step_failure` once fulfilment stops here."""
        return {
            "step": step,
            "service": self.service,
            "code": self.code,
            "reason": self.reason,
            "fields": list(self.fields),
            "retries_exhausted": retries_exhausted,
            "at": at.isoformat(),
        }


def classify(exc: Exception) -> Failure:
    if isinstance(exc, ServiceCallError):
        return Failure(exc.summary, exc.service, exc.code, exc.transient, exc.reason, exc.fields)
    if isinstance(exc, DomainError):
        fields = tuple(dict.fromkeys(v.field for v in exc.violations))
        summary = f"{exc.code.name} {exc.reason}"
        return Failure(
            summary, "privacy", exc.code.name, exc.code in TRANSIENT_CODES, exc.reason, fields
        )
    # the database or the journal's disk away, a bug: retried, and visible in the logs
    return Failure(type(exc).__name__, "privacy", type(exc).__name__, True)


def _stopped_note(step: str, failure: Failure) -> str:
    return f"{step}: {failure.summary}; waiting for an officer to reject or approve again"


class Fulfiller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        rights: DataRights,
        steps: StepExecutor,
        journal: ErasureJournal,
    ) -> None:
        self._pool = pool
        self._rights = rights
        self._steps = steps
        self._journal = journal
        self._task: asyncio.Task[None] | None = None
        # a run holds one connection for its lock and borrows others for its steps: bounding
        # the runs keeps concurrent approvals from taking every connection and waiting forever
        self._runs = asyncio.Semaphore(max(1, pool.get_max_size() // 3))

    @property
    def _clock(self) -> Callable[[], datetime]:
        return self._rights.clock

    async def approve(self, caller: Caller, request_id: str, key: str) -> RequestView:
        """IDENTITY_VERIFIED -> IN_PROGRESS, then a run. On an IN_PROGRESS request it
        resumes a fulfilment that stopped (a refusal an officer dealt with, retries used up)."""

        async def work(conn: Conn) -> None:
            row = await store_requests.get_request(conn, request_id, for_update=True)
            if row is None:
                raise not_found("data request")
            if row.approve_request_id == key:
                return  # a repeat: run whatever is left
            now = self._clock()
            if row.state == rules.IN_PROGRESS:
                row = replace(
                    row,
                    attempts=0,
                    next_attempt_at=now + RUN_LEASE,
                    # the officer saw why it stopped; this run records it again if need be
                    step_failure=None,
                    updated_at=now,
                )
                await store_requests.save_request(conn, row)
                await record(conn, caller, row, "resumed", now)
                return
            rules.require_allowed("approve", row.state)
            row = replace(
                row,
                state=rules.IN_PROGRESS,
                approve_request_id=key,
                steps=[Step(name) for name in rules.STEPS[row.type]],
                # the resumer leaves it to this call unless the call dies
                next_attempt_at=now + RUN_LEASE,
                updated_at=now,
            )
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "approved", now)

        await in_transaction(self._pool, work)
        await self.run(request_id)
        return await self._rights.get(request_id)

    async def run(self, request_id: str) -> None:
        """Does what is left of an IN_PROGRESS request. One run per request at a time: if
        another holds the request (another replica, the resumer), this one returns."""
        async with self._runs, self._pool.acquire() as lock_conn:
            if not await store_requests.try_lock_fulfilment(lock_conn, request_id):
                return
            try:
                await self._run_locked(request_id)
            finally:
                await store_requests.unlock_fulfilment(lock_conn, request_id)

    async def _run_locked(self, request_id: str) -> None:
        async with self._pool.acquire() as conn:
            row = await store_requests.get_request(conn, request_id)
        while row is not None and row.state == rules.IN_PROGRESS:
            pending = [s for s in row.steps if s.done_at is None]
            if not pending:
                await self._complete(request_id)
                return
            step = pending[0].name
            try:
                outcome = await self._steps.execute(row, step)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # recorded and retried or stopped; never lost
                await self._failed(request_id, step, exc)
                return
            row = await self._step_done(request_id, step, outcome)

    async def _step_done(
        self, request_id: str, name: str, outcome: dict[str, object]
    ) -> RequestRow | None:
        async def work(conn: Conn) -> RequestRow | None:
            row = await store_requests.get_request(conn, request_id, for_update=True)
            if row is None or row.state != rules.IN_PROGRESS:
                return None
            now = self._clock()
            steps = [
                replace(s, done_at=now, last_error="") if s.name == name else s for s in row.steps
            ]
            row = replace(
                row,
                steps=steps,
                attempts=0,
                step_failure=None,
                updated_at=now,
                **outcome,  # type: ignore[arg-type]
            )
            await store_requests.save_request(conn, row)
            await record(conn, PRIVACY_CALLER, row, f"step.{name}", now)
            return row

        return await in_transaction(self._pool, work)

    async def _failed(self, request_id: str, name: str, exc: Exception) -> None:
        failure = classify(exc)

        async def work(conn: Conn) -> bool:
            row = await store_requests.get_request(conn, request_id, for_update=True)
            if row is None or row.state != rules.IN_PROGRESS:
                return False
            now = self._clock()
            attempts = row.attempts + 1
            # an erasure under way must finish: it retries for as long as it takes
            retry = failure.transient and (row.type == "DELETION" or attempts < MAX_ATTEMPTS)
            steps = [
                replace(s, last_error=failure.summary) if s.name == name else s for s in row.steps
            ]
            row = replace(
                row,
                steps=steps,
                attempts=attempts,
                next_attempt_at=now + backoff(attempts) if retry else None,
                step_failure=None if retry else failure.stopped(name, failure.transient, now),
                updated_at=now,
            )
            await store_requests.save_request(conn, row)
            await record(conn, PRIVACY_CALLER, row, f"step.{name}.failed", now, failure.summary)
            if not retry:  # said in the timeline too: nothing more happens on its own
                note = _stopped_note(name, failure)
                await record(conn, PRIVACY_CALLER, row, "fulfilment.stopped", now, note)
            return retry

        will_retry = await in_transaction(self._pool, work)
        log.warning(
            "data request step failed",
            extra={"fields": {"step": name, "error": failure.summary, "will_retry": will_retry}},
        )

    async def _complete(self, request_id: str) -> None:
        async def work(conn: Conn) -> None:
            row = await store_requests.get_request(conn, request_id, for_update=True)
            if row is None or row.state != rules.IN_PROGRESS:
                return
            now = self._clock()
            row = replace(
                row, state=rules.COMPLETED, closed_at=now, next_attempt_at=None, updated_at=now
            )
            await store_requests.save_request(conn, row)
            await record(conn, PRIVACY_CALLER, row, "completed", now, row.deletion_outcome)

        await in_transaction(self._pool, work)

    # -- the background resumer and purger ----------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="fulfilment")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def resume_due(self) -> int:
        """Runs the requests whose next attempt is due; each on its own, so one that fails
        in an unforeseen way holds up no other."""
        async with self._pool.acquire() as conn:
            due = await store_requests.due_for_resumption(conn, self._clock(), RESUME_BATCH)
        for request_id in due:
            try:
                await self.run(request_id)
            except Exception:  # e.g. the database away while recording: next round
                log.exception("resuming a data request failed; will retry")
        return len(due)

    async def _loop(self) -> None:
        while True:
            for work in (self.resume_due, self._steps.exports.purge_expired):
                try:
                    await work()
                except Exception:  # the database away: try again next round
                    log.exception("data request background work failed; will retry")
            await asyncio.sleep(RESUME_POLL_S)

    # -- after a restore ------------------------------------------------------------------

    async def reapply_erasures(self) -> int:
        """Re-erases the members the journal names whose data key this database still holds
        (an older backup was restored): the key is destroyed now, before the service serves;
        accounts and points follow through the resumer. The number re-erased."""
        members = {e.member_id: e for e in self._journal.entries()}
        async with self._pool.acquire() as conn:
            live = await store_requests.with_live_keys(conn, list(members))
            recorded = await store_requests.all_erasures(conn)
        # the database is ahead of the journal (a torn or lost journal): complete it
        for member_id, data_request_id, erased_at in recorded:
            if member_id not in members:
                self._journal.record(JournalEntry(member_id, data_request_id, erased_at))
        count = 0
        for member_id in sorted(live):
            await self._reerase(members[member_id])
            count += 1
        if count:
            log.warning("members re-erased after a restore", extra={"fields": {"count": count}})
        return count

    async def _reerase(self, entry: JournalEntry) -> None:
        now = self._clock()
        row = self._rights.internal_deletion(entry.member_id, entry.data_request_id, now)

        async def work(conn: Conn) -> None:
            if await store_requests.find_by_create_request_id(conn, row.create_request_id):
                return
            await store_requests.insert_request(conn, row)
            await record(conn, PRIVACY_CALLER, row, "reapplied_after_restore", now)

        await in_transaction(self._pool, work)
        stored = await self._rights.by_create_key(row.create_request_id)
        if stored.member_id != entry.member_id or stored.type != "DELETION":
            raise RuntimeError("the re-erasure's request key names another request")
        outcome = await self._steps.execute(stored, "subject_key.destroy")
        await self._step_done(stored.id, "subject_key.destroy", outcome)
