"""What each fulfilment step of a data-subject request does (data_request_fulfilment.py runs
them, in the order domain/data_requests.STEPS gives).

A step returns what it sets on the request (an outcome, an explanation). Every step is safe to
run again: the other services' calls carry request ids derived from the data request's, and
local writes are upserts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime

import asyncpg

from services.privacy.consent import Consents
from services.privacy.data_requests import (
    CORRECTION_CONTEXT,
    PRIVACY_CALLER,
    DataRequests,
    record,
)
from services.privacy.domain.data_request_fulfilment import (
    NOTHING,
    StepOutcome,
    rejected_by_erasure,
)
from services.privacy.domain.data_request_intake import Change
from services.privacy.domain.data_requests import (
    DataRequest,
    DeletionOutcome,
    Explanation,
    RequestType,
    StepName,
    TimelineAction,
)
from services.privacy.domain.erasures import JournalEntry, ledger_retention
from services.privacy.domain.export_bundle import ExportSources, LedgerExport
from services.privacy.domain.exports import EXPORT_NOT_BUILT
from services.privacy.domain.field_crypto import FieldValue
from services.privacy.domain.processing import PauseCause
from services.privacy.domain.service_calls import ServiceCallError
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.export_stream import FrameBundle, streamed_archive
from services.privacy.exports import Exports
from services.privacy.field_crypto import FieldCrypto
from services.privacy.ports import AccountsPort, PointsPort
from services.privacy.store import data_requests as request_store
from services.privacy.store import erasures as erasure_store
from services.privacy.store import exports as export_store
from services.privacy.store import outbox as outbox_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import Code, failed_precondition

MAX_HISTORY = 10_000  # consent records of a member in their export bundle


class StepExecutor:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        crypto: FieldCrypto,
        consents: Consents,
        requests: DataRequests,
        exports: Exports,
        accounts: AccountsPort,
        points: PointsPort,
        journal: ErasureJournal,
        frame_bundle: FrameBundle,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._crypto = crypto
        self._consents = consents
        self._requests = requests
        self.exports = exports
        self._accounts = accounts
        self._points = points
        self._journal = journal
        self._frame_bundle = frame_bundle
        self._clock = clock
        self._handlers: dict[StepName, Callable[[DataRequest], Awaitable[StepOutcome]]] = {
            StepName.EXPORT_BUILD: self._export,
            StepName.ACCOUNTS_UPDATE: self._correct,
            StepName.SUBJECT_KEY_DESTROY: self._destroy_key,
            StepName.ACCOUNTS_ERASE: self._erase_accounts,
            StepName.POINTS_RESTRICT: self._restrict_points,
            StepName.POINTS_EXPLAIN: self._explain,
            StepName.PROCESSING_PAUSE: self._pause,
            StepName.CONSENTS_WITHDRAW: self._withdraw,
        }

    async def execute(self, request: DataRequest, step: StepName) -> StepOutcome:
        return await self._handlers[step](request)

    # -- ACCESS / PORTABILITY -----------------------------------------------------------------

    async def _export(self, request: DataRequest) -> StepOutcome:
        """The bundle written while points' ledger stream arrives (export_stream.py): no
        object per transaction, the compression overlapping PostgreSQL's rendering."""
        member = await self._accounts.export_member(request.member_id, purpose=request.name)
        states = await self._consents.states(request.member_id)
        records = await self._consents.history(request.member_id, MAX_HISTORY)
        requests = await self._requests.history(request.member_id)

        def sources_of(ledger: LedgerExport) -> ExportSources:
            return ExportSources(
                member_id=request.member_id,
                member=member,
                ledger=ledger,
                consents=states,
                consent_history=records,
                requests=requests,
                generated_at=self._clock(),
                request_name=request.name,
                portable=request.type == RequestType.PORTABILITY,
            )

        pieces = self._points.stream_ledger(request.member_id)
        try:
            archive = await streamed_archive(pieces, sources_of, self._frame_bundle)
        except ValueError as exc:  # too large, or inconsistent sources: not worth a retry
            raise failed_precondition(EXPORT_NOT_BUILT, str(exc)) from None
        await self.exports.keep(request_id=request.id, member_id=request.member_id, archive=archive)
        return NOTHING

    # -- CORRECTION -----------------------------------------------------------------------------

    async def _correct(self, request: DataRequest) -> StepOutcome:
        assert request.correction_ciphertext is not None, "a correction carries its changes"
        plaintexts = await self._crypto.decrypt(
            PRIVACY_CALLER,
            request.member_id,
            [FieldValue(CORRECTION_CONTEXT, request.correction_ciphertext)],
            purpose="data request correction",
            on_behalf_of="",
            request_id=request.name,
        )
        changes = [Change(f, v) for f, v in sorted(json.loads(plaintexts[0]).items())]
        await self._accounts.update_member(
            request.member_id, changes, request_id=f"{request.id}-correction"
        )
        return NOTHING

    # -- DELETION ------------------------------------------------------------------------------

    async def _destroy_key(self, request: DataRequest) -> StepOutcome:
        now = self._clock()
        # the journal first: from here on no restore can bring the member back, even if
        # this process dies before the database records the erasure
        entry = JournalEntry(member_id=request.member_id, data_request_id=request.id, erased_at=now)
        await asyncio.to_thread(self._journal.record, entry)
        await self._crypto.destroy_subject_key(
            PRIVACY_CALLER, request.member_id, request_id=request.name, reason=request.name
        )

        async def work(conn: Conn) -> None:
            retention = ledger_retention(now)
            await erasure_store.insert_erasure(
                conn, request.member_id, retention, data_request_id=request.id, at=now
            )
            await export_store.purge_member(conn, request.member_id, now)
            await self._close_other_requests(conn, request, now)

        await in_transaction(self._pool, work)
        return NOTHING

    async def _close_other_requests(self, conn: Conn, request: DataRequest, now: datetime) -> None:
        """The member's other open requests can no longer be fulfilled: rejected with the
        reason, unless one is being fulfilled or partly done (an officer decides those)."""
        for other in await request_store.open_requests_of_member(conn, request.member_id):
            if other.id == request.id or other.partly_done:
                continue
            if not await request_store.fulfilment_idle(conn, other.id):
                continue
            rejected = rejected_by_erasure(other, request, now)
            await request_store.save_request(conn, rejected)
            note = rejected.rejection_reason
            await record(conn, PRIVACY_CALLER, rejected, TimelineAction.REJECTED, now, note=note)

    async def _erase_accounts(self, request: DataRequest) -> StepOutcome:
        try:
            await self._accounts.erase_member(
                request.member_id, request_id=f"{request.id}-erase", reason=request.name
            )
        except ServiceCallError as exc:
            if exc.code != Code.NOT_FOUND.value:  # accounts never had the member: nothing to erase
                raise
        return NOTHING

    async def _restrict_points(self, request: DataRequest) -> StepOutcome:
        async with self._pool.acquire() as conn:
            retention = await erasure_store.get_retention(conn, request.member_id)
        retention = retention or ledger_retention(request.created_at)
        try:
            known = await self._points.restrict_member(
                request.member_id, retention, request_id=request.name
            )
        except ServiceCallError as exc:
            if exc.code != Code.ALREADY_EXISTS.value:  # restricted by an earlier erasure
                raise
            known = True
        kept = known and await self._points.ledger_has_entries(request.member_id)
        outcome = DeletionOutcome.RETAINED_RESTRICTED if kept else DeletionOutcome.ERASED
        return StepOutcome(deletion_outcome=outcome)

    # -- EXPLANATION, RESTRICTION, CONSENT_WITHDRAWAL ---------------------------------------

    async def _explain(self, request: DataRequest) -> StepOutcome:
        rules_json = await self._points.explain_rules(request.member_id)
        explained = []
        for name in request.transactions:
            try:
                explained.append(await self._points.explain_transaction(name))
            except ServiceCallError as exc:
                if exc.transient:
                    raise
                explained.append(json.dumps({"name": name, "error": exc.code}))
        return StepOutcome(explanation=Explanation(rules_json, tuple(explained)))

    async def _pause(self, request: DataRequest) -> StepOutcome:
        async def work(conn: Conn) -> None:
            cause = PauseCause.RESTRICTION_REQUESTED
            await outbox_store.enqueue_pause(conn, request.member_id, cause, paused=True)

        await in_transaction(self._pool, work)
        return NOTHING

    async def _withdraw(self, request: DataRequest) -> StepOutcome:
        await self._consents.withdraw(
            PRIVACY_CALLER,
            request.member_id,
            request.purposes,
            channel=request.channel,
            request_id=f"{request.id}-withdraw",
        )
        return NOTHING
