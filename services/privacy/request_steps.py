"""What each fulfilment step of a data-subject request does (fulfilment.py runs them).

A step returns the request fields it sets (an outcome, an explanation). Every step is safe to
run again: the other services' calls carry request ids derived from the data request's, and
local writes are upserts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
from membership.privacy.v1 import consent_pb2, data_rights_pb2

from services.privacy import (
    export_bundle,
    store_consent,
    store_exports,
    store_outbox,
    store_requests,
)
from services.privacy.consent import Consents
from services.privacy.data_rights import CORRECTION_CONTEXT, PRIVACY_CALLER, record
from services.privacy.erasure_journal import ErasureJournal, JournalEntry
from services.privacy.exports import ARCHIVE_CONTEXT, Exports, make_archive
from services.privacy.field_crypto import FieldCrypto
from services.privacy.member_services import MemberServices, ServiceCallError
from services.privacy.server_consent import CHANNEL_ENUMS, consent_pb
from services.privacy.store_requests import RequestRow
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import failed_precondition

Outcome = dict[str, object]

# Art. 47 ¶2: what the law requires to keep is kept, restricted. Points are a liability of
# the programme: its transactions are accounting records (会计档案管理办法 Art. 14: 30 years).
LEDGER_LEGAL_BASIS = "PIPL Art. 47(2); accounting records retention (30 years)"
LEDGER_RETENTION = timedelta(days=30 * 366)
RESTRICTION_CAUSE = "RESTRICTION_REQUESTED"
MAX_HISTORY = 10_000
HistoryProtos = Callable[[str], Awaitable[Sequence[data_rights_pb2.DataRequest]]]


class StepExecutor:
    def __init__(
        self,
        pool: asyncpg.Pool,
        crypto: FieldCrypto,
        consents: Consents,
        exports: Exports,
        services: MemberServices,
        journal: ErasureJournal,
        request_history: HistoryProtos,
        clock: Callable[[], datetime],
    ) -> None:
        self._pool = pool
        self._crypto = crypto
        self._consents = consents
        self.exports = exports
        self._services = services
        self._journal = journal
        self._request_history = request_history
        self._clock = clock
        self._handlers: dict[str, Callable[[RequestRow], Awaitable[Outcome]]] = {
            "export.build": self._export,
            "accounts.update": self._correct,
            "subject_key.destroy": self._destroy_key,
            "accounts.erase": self._erase_accounts,
            "points.restrict": self._restrict_points,
            "points.explain": self._explain,
            "processing.pause": self._pause,
            "consents.withdraw": self._withdraw,
        }

    async def execute(self, row: RequestRow, step: str) -> Outcome:
        return await self._handlers[step](row)

    # -- ACCESS / PORTABILITY -----------------------------------------------------------------

    async def _export(self, row: RequestRow) -> Outcome:
        sources = await self._gather(row)
        # seconds of CPU for a large ledger: off the event loop, so that the service keeps
        # answering (zlib and AES-GCM release the GIL; the JSON building shares it)
        try:
            bundle = await asyncio.to_thread(export_bundle.build_bundle, sources)
        except ValueError as exc:  # too large, or inconsistent sources: not worth a retry
            raise failed_precondition("EXPORT_NOT_BUILT", str(exc)) from None
        archive = await asyncio.to_thread(make_archive, bundle)
        ciphertexts, _ = await self._crypto.encrypt(
            PRIVACY_CALLER, row.member_id, [(ARCHIVE_CONTEXT, archive)]
        )
        export = self.exports.new_row(row.id, row.member_id, archive)
        await in_transaction(
            self._pool, lambda conn: store_exports.insert_export(conn, export, ciphertexts[0])
        )
        return {}

    async def _gather(self, row: RequestRow) -> export_bundle.BundleSources:
        member = await self._services.export_member(row.member_id, f"dataRequests/{row.id}")
        pages = await self._services.ledger_pages(row.member_id)
        states = await self._consents.states(row.member_id)
        async with self._pool.acquire() as conn:
            records = await store_consent.history(conn, row.member_id, MAX_HISTORY)
        return export_bundle.BundleSources(
            member_export=member,
            ledger_pages=pages,
            consents=[consent_pb(row.member_id, s) for s in states],
            consent_history=[
                export_bundle.ConsentHistoryEntry(
                    r.purpose_code,
                    export_bundle.ConsentAction(r.action),
                    r.notice_version,
                    CHANNEL_ENUMS.get(r.channel, consent_pb2.CHANNEL_UNSPECIFIED),
                    r.recorded_at,
                )
                for r in records
            ],
            requests=await self._request_history(row.member_id),
            generated_at=self._clock(),
            request_name=f"dataRequests/{row.id}",
            portable=row.type == "PORTABILITY",
        )

    # -- CORRECTION -----------------------------------------------------------------------------

    async def _correct(self, row: RequestRow) -> Outcome:
        assert row.correction_ciphertext is not None, "a correction request carries its changes"
        plaintexts = await self._crypto.decrypt(
            PRIVACY_CALLER,
            row.member_id,
            [(CORRECTION_CONTEXT, row.correction_ciphertext)],
            "data request correction",
            "",
            f"dataRequests/{row.id}",
        )
        changes = sorted(json.loads(plaintexts[0]).items())
        await self._services.update_member(row.member_id, changes, f"{row.id}-correction")
        return {}

    # -- DELETION ------------------------------------------------------------------------------

    async def _destroy_key(self, row: RequestRow) -> Outcome:
        name = f"dataRequests/{row.id}"
        now = self._clock()
        # the journal first: from here on no restore can bring the member back, even if
        # this process dies before the database records the erasure
        await asyncio.to_thread(self._journal.record, JournalEntry(row.member_id, row.id, now))
        await self._crypto.destroy_subject_key(PRIVACY_CALLER, row.member_id, name, name)

        async def work(conn: Conn) -> None:
            await store_requests.insert_erasure(
                conn, row.member_id, row.id, LEDGER_LEGAL_BASIS, now + LEDGER_RETENTION, now
            )
            await store_exports.purge_member(conn, row.member_id, now)
            await self._close_other_requests(conn, row, now)

        await in_transaction(self._pool, work)
        return {}

    async def _close_other_requests(self, conn: Conn, row: RequestRow, now: datetime) -> None:
        """The member's other open requests can no longer be fulfilled: rejected with the
        reason, unless one is being fulfilled or partly done (an officer decides those)."""
        reason = f"the member's personal information was erased by dataRequests/{row.id}"
        for other in await store_requests.open_requests_of_member(conn, row.member_id):
            if other.id == row.id or any(s.done_at for s in other.steps):
                continue
            if not await store_requests.fulfilment_idle(conn, other.id):
                continue
            closed = replace(
                other,
                state="REJECTED",
                rejection_reason=reason,
                closed_at=now,
                next_attempt_at=None,
                updated_at=now,
            )
            await store_requests.save_request(conn, closed)
            await record(conn, PRIVACY_CALLER, closed, "rejected", now, reason)

    async def _erase_accounts(self, row: RequestRow) -> Outcome:
        try:
            await self._services.erase_member(
                row.member_id, f"{row.id}-erase", f"dataRequests/{row.id}"
            )
        except ServiceCallError as exc:
            if exc.code != "NOT_FOUND":  # accounts never had the member: nothing to erase
                raise
        return {}

    async def _restrict_points(self, row: RequestRow) -> Outcome:
        async with self._pool.acquire() as conn:
            erasure = await store_requests.get_erasure(conn, row.member_id)
        legal_basis, retention_end = erasure or (
            LEDGER_LEGAL_BASIS,
            row.created_at + LEDGER_RETENTION,
        )
        try:
            known = await self._services.restrict_ledger(
                row.member_id, f"dataRequests/{row.id}", legal_basis, retention_end
            )
        except ServiceCallError as exc:
            if exc.code != "ALREADY_EXISTS":  # restricted by an earlier erasure already
                raise
            known = True
        kept = known and await self._services.ledger_has_entries(row.member_id)
        return {"deletion_outcome": "RETAINED_RESTRICTED" if kept else "ERASED"}

    # -- EXPLANATION, RESTRICTION, CONSENT_WITHDRAWAL ---------------------------------------

    async def _explain(self, row: RequestRow) -> Outcome:
        rules_json = await self._services.explain_rules(row.member_id)
        explained = []
        for name in row.transactions:
            try:
                explained.append(await self._services.explain_transaction(name))
            except ServiceCallError as exc:
                if exc.transient:
                    raise
                explained.append(json.dumps({"name": name, "error": exc.code}))
        return {"explanation": {"rules": rules_json, "transactions": explained}}

    async def _pause(self, row: RequestRow) -> Outcome:
        async def work(conn: Conn) -> None:
            await store_outbox.enqueue_pause(conn, row.member_id, RESTRICTION_CAUSE, paused=True)

        await in_transaction(self._pool, work)
        return {}

    async def _withdraw(self, row: RequestRow) -> Outcome:
        await self._consents.withdraw(
            PRIVACY_CALLER, row.member_id, row.purposes, row.channel, f"{row.id}-withdraw"
        )
        return {}
