"""Fulfilment of approved data-subject requests, step by step, resumable (the rules are
domain/data_request_fulfilment.py; what each step does is data_request_steps.py).

An approved request is IN_PROGRESS with its type's steps. A run takes the request's lock,
does each step not yet done, marks it done, and completes the request after the last. A step
that fails because a service is down or slow is retried later with backoff, by the
background resumer or by repeating the approval; a refusal, or retries used up, stops the
request: it stays IN_PROGRESS with its `step_failure` (step, service, code, reason, field
names) and a `fulfilment.stopped` timeline entry, for an officer to reject it with a reason
or approve it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.privacy.data_request_steps import StepExecutor
from services.privacy.data_requests import PRIVACY_CALLER, DataRequests, record
from services.privacy.domain import data_request_fulfilment as rules
from services.privacy.domain.data_request_intake import internal_deletion
from services.privacy.domain.data_requests import (
    DataRequest,
    RequestType,
    RequestView,
    State,
    StepName,
    TimelineAction,
    step_done_action,
    step_failed_action,
)
from services.privacy.domain.deadlines import WorkingCalendar
from services.privacy.domain.erasures import JournalEntry
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.store import data_requests as request_store
from services.privacy.store import erasures as erasure_store
from services.privacy.store import keys as key_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import not_found
from services.runtime.identity import Caller

log = logging.getLogger("membership.privacy.fulfilment")

RESUME_POLL_S = 2.0
RESUME_BATCH = 20


class Fulfiller:
    def __init__(
        self,
        pool: asyncpg.Pool,
        requests: DataRequests,
        steps: StepExecutor,
        journal: ErasureJournal,
        calendar: WorkingCalendar,
    ) -> None:
        self._pool = pool
        self._requests = requests
        self._steps = steps
        self._journal = journal
        self._calendar = calendar
        self._task: asyncio.Task[None] | None = None
        # a run holds one connection for its lock and borrows others for its steps: bounding
        # the runs keeps concurrent approvals from taking every connection and waiting forever
        self._runs = asyncio.Semaphore(max(1, pool.get_max_size() // 3))

    @property
    def _clock(self) -> Callable[[], datetime]:
        return self._requests.clock

    async def approve(self, caller: Caller, request_id: str, *, key: str) -> RequestView:
        """IDENTITY_VERIFIED -> IN_PROGRESS, then a run. On an IN_PROGRESS request it
        resumes a fulfilment that stopped (a refusal an officer dealt with, retries used up)."""

        async def work(conn: Conn) -> None:
            request = await request_store.get_request(conn, request_id, for_update=True)
            if request is None:
                raise not_found("data request")
            if request.approve_request_id == key:
                return  # a repeat: run whatever is left
            now = self._clock()
            if request.state == State.IN_PROGRESS:
                request = rules.resumed(request, now)
                action = TimelineAction.RESUMED
            else:
                request = rules.approved(request, key=key, now=now)
                action = TimelineAction.APPROVED
            await request_store.save_request(conn, request)
            await record(conn, caller, request, action, now)

        await in_transaction(self._pool, work)
        await self.run(request_id)
        return await self._requests.get(request_id)

    async def run(self, request_id: str) -> None:
        """Does what is left of an IN_PROGRESS request. One run per request at a time: if
        another holds the request (another replica, the resumer), this one returns."""
        async with self._runs, self._pool.acquire() as lock_conn:
            if not await request_store.try_lock_fulfilment(lock_conn, request_id):
                return
            try:
                await self._run_locked(request_id)
            finally:
                await request_store.unlock_fulfilment(lock_conn, request_id)

    async def _run_locked(self, request_id: str) -> None:
        async with self._pool.acquire() as conn:
            request = await request_store.get_request(conn, request_id)
        while request is not None and request.state == State.IN_PROGRESS:
            pending = request.pending_steps()
            if not pending:
                await self._complete(request_id)
                return
            step = pending[0]
            try:
                outcome = await self._steps.execute(request, step)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # recorded and retried or stopped; never lost
                await self._failed(request_id, step, exc)
                return
            request = await self._step_done(request_id, step, outcome)

    async def _step_done(
        self, request_id: str, name: StepName, outcome: rules.StepOutcome
    ) -> DataRequest | None:
        async def work(conn: Conn) -> DataRequest | None:
            request = await request_store.get_request(conn, request_id, for_update=True)
            if request is None or request.state != State.IN_PROGRESS:
                return None
            now = self._clock()
            request = rules.step_done(request, name, outcome, now)
            await request_store.save_request(conn, request)
            await record(conn, PRIVACY_CALLER, request, step_done_action(name), now)
            return request

        return await in_transaction(self._pool, work)

    async def _failed(self, request_id: str, name: StepName, exc: Exception) -> None:
        failure = rules.classify(exc)

        async def work(conn: Conn) -> bool:
            request = await request_store.get_request(conn, request_id, for_update=True)
            if request is None or request.state != State.IN_PROGRESS:
                return False
            now = self._clock()
            request = rules.step_failed(request, name, failure, now)
            await request_store.save_request(conn, request)
            action = step_failed_action(name)
            await record(conn, PRIVACY_CALLER, request, action, now, note=failure.summary)
            retry = request.step_failure is None
            if not retry:  # said in the timeline too: nothing more happens on its own
                note = failure.stopped_note(name)
                stopped = TimelineAction.FULFILMENT_STOPPED
                await record(conn, PRIVACY_CALLER, request, stopped, now, note=note)
            return retry

        will_retry = await in_transaction(self._pool, work)
        log.warning(
            "data request step failed",
            extra={"fields": {"step": name, "error": failure.summary, "will_retry": will_retry}},
        )

    async def _complete(self, request_id: str) -> None:
        async def work(conn: Conn) -> None:
            request = await request_store.get_request(conn, request_id, for_update=True)
            if request is None or request.state != State.IN_PROGRESS:
                return
            now = self._clock()
            request = rules.completed(request, now)
            await request_store.save_request(conn, request)
            note = request.deletion_outcome
            await record(conn, PRIVACY_CALLER, request, TimelineAction.COMPLETED, now, note=note)

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
            due = await request_store.due_for_resumption(conn, self._clock(), RESUME_BATCH)
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
            live = await key_store.live_subjects(conn, list(members))
            recorded = await erasure_store.all_erasures(conn)
        # the database is ahead of the journal (a torn or lost journal): complete it
        for entry in recorded:
            if entry.member_id not in members:
                self._journal.record(entry)
        count = 0
        for member_id in sorted(live):
            await self._reerase(members[member_id])
            count += 1
        if count:
            log.warning("members re-erased after a restore", extra={"fields": {"count": count}})
        return count

    async def _reerase(self, entry: JournalEntry) -> None:
        now = self._clock()
        request = internal_deletion(
            entry.member_id, entry.data_request_id, now=now, calendar=self._calendar
        )

        async def work(conn: Conn) -> None:
            if await request_store.find_by_create_request_id(conn, request.create_request_id):
                return
            await request_store.insert_request(conn, request)
            action = TimelineAction.REAPPLIED_AFTER_RESTORE
            await record(conn, PRIVACY_CALLER, request, action, now)

        await in_transaction(self._pool, work)
        stored = await self._requests.by_create_key(request.create_request_id)
        if stored.member_id != entry.member_id or stored.type != RequestType.DELETION:
            raise RuntimeError("the re-erasure's request key names another request")
        outcome = await self._steps.execute(stored, StepName.SUBJECT_KEY_DESTROY)
        await self._step_done(stored.id, StepName.SUBJECT_KEY_DESTROY, outcome)
