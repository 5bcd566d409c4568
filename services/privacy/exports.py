"""Export bundles of ACCESS / PORTABILITY requests: storing one encrypted, downloading it in
parts, purging what expired (the rules are domain/exports.py). Every download and every purge
is in the audit log, in the transaction that counts or purges it."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import asyncpg

from services.privacy.domain import exports as rules
from services.privacy.domain.audit import AuditEvent
from services.privacy.domain.exports import Export, Part
from services.privacy.domain.field_crypto import FieldValue
from services.privacy.field_crypto import FieldCrypto
from services.privacy.store import audit as audit_store
from services.privacy.store import exports as export_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import not_found
from services.runtime.identity import Caller
from services.runtime.paging import decode_token, encode_token

PURGE_BATCH = 100
OPEN_DOWNLOADS = 4  # archives kept decrypted in memory, at most
DOWNLOADED = "export.downloaded"
PURGED = "export.purged"


class Exports:
    def __init__(
        self, pool: asyncpg.Pool, crypto: FieldCrypto, caller: Caller, clock: Callable[[], datetime]
    ) -> None:
        self._pool = pool
        self._crypto = crypto
        self._caller = caller
        self._clock = clock
        # the archives of the downloads in progress here, so that each is decrypted (and the
        # decryption audited) once per download, not once per part
        self._open: OrderedDict[bytes, bytes] = OrderedDict()

    async def keep(self, *, request_id: str, member_id: str, archive: bytes) -> None:
        """Encrypts the archive under the member's data key and keeps it (once: a repeat of
        the step keeps the first)."""
        ciphertexts, _ = await self._crypto.encrypt(
            self._caller, member_id, [FieldValue(rules.ARCHIVE_CONTEXT, archive)]
        )
        export = rules.new_export(request_id, member_id, archive, self._clock())
        await in_transaction(
            self._pool, lambda conn: export_store.insert_export(conn, export, ciphertexts[0])
        )

    async def download(self, caller: Caller, request_id: str, *, page_token: str) -> Part:
        query = {"r": request_id}
        token = decode_token(page_token, query)
        if token is None:
            export, nonce = await self._start(caller, request_id)
            offset = 0
        else:
            position = rules.position_of(token)
            export = await self._resume(request_id, position)
            nonce, offset = position
        archive = await self._archive(caller, export, nonce)
        end = min(offset + rules.PART_BYTES, len(archive))
        following = rules.token_of(rules.DownloadPosition(nonce, end))
        next_token = encode_token(following, query) if end < len(archive) else ""
        return Part(export, archive[offset:end], offset, next_token)

    async def _start(self, caller: Caller, request_id: str) -> tuple[Export, bytes]:
        nonce = secrets.token_bytes(rules.NONCE_BYTES)

        async def work(conn: Conn) -> Export:
            export = await export_store.get_export(conn, request_id, for_update=True)
            if export is None:
                raise not_found("export of the data request")
            now = self._clock()
            if export.gone(now):
                raise rules.export_gone()
            if export.downloads_remaining <= 0:
                raise rules.download_limit_reached()
            window_end = now + rules.DOWNLOAD_WINDOW
            await export_store.start_download(
                conn, request_id, nonce, now=now, window_end=window_end
            )
            await audit_store.append_audit(conn, _event(caller, export, DOWNLOADED))
            found = await export_store.get_export(conn, request_id)
            assert found is not None
            return found

        return await in_transaction(self._pool, work), nonce

    async def _resume(self, request_id: str, position: rules.DownloadPosition) -> Export:
        async with self._pool.acquire() as conn:
            window = await export_store.download_window(conn, position.nonce)
            export = await export_store.get_export(conn, request_id)
        if export is not None and export.purged_at is not None:
            self._open.pop(position.nonce, None)
        return rules.check_part(request_id, window, export, position, self._clock())

    async def _archive(self, caller: Caller, export: Export, nonce: bytes) -> bytes:
        cached = self._open.get(nonce)
        if cached is not None:
            return cached
        archive = await self._decrypt(caller, export)
        self._open[nonce] = archive
        while len(self._open) > OPEN_DOWNLOADS:
            self._open.popitem(last=False)
        return archive

    async def _decrypt(self, caller: Caller, export: Export) -> bytes:
        async with self._pool.acquire() as conn:
            ciphertext = await export_store.archive_ciphertext(conn, export.data_request_id)
        if ciphertext is None:
            raise rules.export_gone()
        plaintexts = await self._crypto.decrypt(
            self._caller,
            export.member_id,
            [FieldValue(rules.ARCHIVE_CONTEXT, ciphertext)],
            purpose="data request export download",
            on_behalf_of=caller.subject,
            request_id=f"dataRequests/{export.data_request_id}",
        )
        return plaintexts[0]

    async def purge_expired(self) -> int:
        async def work(conn: Conn) -> int:
            due = await export_store.due_for_purge(conn, self._clock(), PURGE_BATCH)
            if due:
                await export_store.purge(conn, [e.data_request_id for e in due], self._clock())
                for export in due:
                    await audit_store.append_audit(conn, _event(self._caller, export, PURGED))
            return len(due)

        return await in_transaction(self._pool, work)


def _event(caller: Caller, export: Export, action: str) -> AuditEvent:
    return AuditEvent(
        actor=caller.subject,
        actor_role=caller.role,
        action=action,
        subject_id=export.member_id,
        request_id=f"dataRequests/{export.data_request_id}",
    )
