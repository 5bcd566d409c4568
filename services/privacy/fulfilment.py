"""Fulfilment of approved data-subject requests, step by step, resumable.

An approved request is IN_PROGRESS with its type's steps (data_requests.STEPS). A run takes
the request's lock, does each step not yet done, marks it done, and completes the request
after the last. Every step is idempotent (the other services' calls carry request ids derived
from the data request's), so a step that ran but was not marked (a crash) runs again safely.
A step that fails because a service is down or slow is retried later with backoff, by the
background resumer or by repeating the approval; a refusal (bad data, a conflict) stops the
request for an officer to reject it with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from services.privacy import data_requests as rules
from services.privacy import store_requests
from services.privacy.data_rights import PRIVACY_CALLER, DataRights, RequestView, record
from services.privacy.erasure_journal import ErasureJournal, JournalEntry
from services.privacy.member_services import ServiceCallError
from services.privacy.request_steps import StepExecutor
from services.privacy.store_requests import RequestRow, Step
from services.runtime.db import Conn, in_transaction, session_lock
from services.runtime.errors import DomainError
from services.runtime.identity import Caller

log = logging.getLogger("membership.privacy.fulfilment")

MAX_ATTEMPTS = 20
BACKOFF_MAX = timedelta(minutes=10)
RESUME_POLL_S = 2.0
RESUME_BATCH = 20


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF_MAX, timedelta(seconds=2 ** min(attempts, 12)))


def _lock_key(request_id: str) -> int:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big", signed=True)


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

    @property
    def _clock(self) -> Callable[[], datetime]:
        return self._rights.clock

    async def approve(self, caller: Caller, request_id: str, key: str) -> RequestView:
        async def work(conn: Conn) -> None:
            row = await store_requests.get_request(conn, request_id, for_update=True)
            if row is None:
                await self._rights.get(request_id)  # raises NOT_FOUND
                return
            if row.approve_request_id == key:
                return  # a repeat: resume whatever is left
            rules.require_allowed("approve", row.state)
            now = self._clock()
            row = replace(
                row,
                state=rules.IN_PROGRESS,
                approve_request_id=key,
                steps=[Step(name) for name in rules.STEPS[row.type]],
                next_attempt_at=now,
                updated_at=now,
            )
            await store_requests.save_request(conn, row)
            await record(conn, caller, row, "approved", now)

        await in_transaction(self._pool, work)
        await self.run(request_id)
        return await self._rights.get(request_id)

    async def run(self, request_id: str) -> None:
        """Does what is left of an IN_PROGRESS request; one run per request at a time."""
        async with (
            self._pool.acquire() as lock_conn,
            session_lock(lock_conn, store_requests.FULFIL_LOCK_NAMESPACE, _lock_key(request_id)),
        ):
            async with self._pool.acquire() as conn:
                row = await store_requests.get_request(conn, request_id)
            if row is None or row.state != rules.IN_PROGRESS:
                return
            for step in row.steps:
                if step.done_at is not None:
                    continue
                try:
                    outcome = await self._steps.execute(row, step.name)
                except (ServiceCallError, DomainError) as exc:
                    await self._failed(row.id, step.name, exc)
                    return
                row = await self._step_done(row.id, step.name, outcome)
            await self._complete(row.id)

    async def _step_done(
        self, request_id: str, name: str, outcome: dict[str, object]
    ) -> RequestRow:
        async def work(conn: Conn) -> RequestRow:
            row = await _locked(conn, request_id)
            now = self._clock()
            steps = [
                replace(s, done_at=now, last_error="") if s.name == name else s for s in row.steps
            ]
            row = replace(row, steps=steps, updated_at=now, **outcome)  # type: ignore[arg-type]
            await store_requests.save_request(conn, row)
            await record(conn, PRIVACY_CALLER, row, f"step.{name}", now)
            return row

        return await in_transaction(self._pool, work)

    async def _failed(
        self, request_id: str, name: str, exc: ServiceCallError | DomainError
    ) -> None:
        summary = (
            exc.summary if isinstance(exc, ServiceCallError) else f"{exc.code.name} {exc.reason}"
        )
        transient = isinstance(exc, ServiceCallError) and exc.transient

        async def work(conn: Conn) -> None:
            row = await _locked(conn, request_id)
            now = self._clock()
            attempts = row.attempts + 1
            retry = transient and attempts < MAX_ATTEMPTS
            steps = [replace(s, last_error=summary) if s.name == name else s for s in row.steps]
            row = replace(
                row,
                steps=steps,
                attempts=attempts,
                next_attempt_at=now + backoff(attempts) if retry else None,
                updated_at=now,
            )
            await store_requests.save_request(conn, row)
            await record(conn, PRIVACY_CALLER, row, f"step.{name}.failed", now, summary)

        log.warning(
            "data request step failed",
            extra={"fields": {"step": name, "error": summary, "will_retry": transient}},
        )
        await in_transaction(self._pool, work)

    async def _complete(self, request_id: str) -> None:
        async def work(conn: Conn) -> None:
            row = await _locked(conn, request_id)
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
        async with self._pool.acquire() as conn:
            due = await store_requests.due_for_resumption(conn, self._clock(), RESUME_BATCH)
        for request_id in due:
            await self.run(request_id)
        return len(due)

    async def _loop(self) -> None:
        while True:
            try:
                await self.resume_due()
                await self._steps.exports.purge_expired()
            except Exception:  # the database away: try again next round
                log.exception("resuming data requests failed; will retry")
            await asyncio.sleep(RESUME_POLL_S)

    # -- after a restore ------------------------------------------------------------------

    async def reapply_erasures(self) -> int:
        """Re-erases the members the journal names whose data key this database still holds
        (an older backup was restored): the key is destroyed now, before the service serves;
        accounts and points follow through the resumer. The number re-erased."""
        members = {e.member_id: e for e in self._journal.entries()}
        async with self._pool.acquire() as conn:
            live = await store_requests.with_live_keys(conn, list(members))
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
        outcome = await self._steps.execute(stored, "subject_key.destroy")
        await self._step_done(stored.id, "subject_key.destroy", outcome)


async def _locked(conn: Conn, request_id: str) -> RequestRow:
    row = await store_requests.get_request(conn, request_id, for_update=True)
    if row is None:
        raise DomainError.internal("a data request in fulfilment disappeared")
    return row
