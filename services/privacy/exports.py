"""Export bundles of ACCESS / PORTABILITY requests: stored encrypted, downloaded a limited
number of times within a limited period, then purged.

The bundle is a ZIP archive (bundle.json and ledger.csv) encrypted under the member's data
key, so erasing the member shreds any export left too. A download is counted when it starts;
its parts (at most PART_BYTES each, to stay under any message size limit) are fetched with a
page token naming the download, valid for DOWNLOAD_WINDOW.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from services.privacy import store, store_exports
from services.privacy.audit import AuditEvent
from services.privacy.envelope import FieldContext
from services.privacy.export_bundle import Bundle
from services.privacy.field_crypto import FieldCrypto
from services.privacy.store_exports import ExportRow
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import bad_field, failed_precondition, not_found
from services.runtime.identity import Caller
from services.runtime.paging import decode_token, encode_token

ARCHIVE_CONTEXT = FieldContext("privacy", "data_exports", "archive")
PART_BYTES = 1024 * 1024
DOWNLOAD_LIMIT = 3
EXPORT_TTL = timedelta(days=7)
DOWNLOAD_WINDOW = timedelta(minutes=10)
PURGE_BATCH = 100
NONCE_BYTES = 16
OPEN_DOWNLOADS = 4  # archives kept decrypted in memory, at most


@dataclass(frozen=True)
class Part:
    export: ExportRow
    data: bytes
    offset: int
    next_page_token: str


def make_archive(bundle: Bundle) -> bytes:
    """Fast deflate: the JSON and CSV shrink about tenfold even at level 1."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("bundle.json", bundle.json_bytes)
        archive.writestr("ledger.csv", bundle.ledger_csv)
    return out.getvalue()


def export_gone() -> Exception:
    return failed_precondition(
        "EXPORT_PURGED", "the export was purged (expired or downloaded the allowed times)"
    )


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

    def new_row(self, request_id: str, member_id: str, archive: bytes) -> ExportRow:
        now = self._clock()
        return ExportRow(
            request_id,
            member_id,
            len(archive),
            hashlib.sha256(archive).digest(),
            DOWNLOAD_LIMIT,
            now,
            now + EXPORT_TTL,
            None,
        )

    async def download(self, caller: Caller, request_id: str, page_token: str) -> Part:
        query = {"r": request_id}
        position = decode_token(page_token, query)
        if position is None:
            export, nonce = await self._start(caller, request_id)
            offset = 0
        else:
            export, nonce, offset = await self._resume(request_id, position)
        archive = await self._archive(caller, export, nonce)
        end = min(offset + PART_BYTES, len(archive))
        token = encode_token({"n": nonce.hex(), "o": end}, query) if end < len(archive) else ""
        return Part(export, archive[offset:end], offset, token)

    async def _start(self, caller: Caller, request_id: str) -> tuple[ExportRow, bytes]:
        nonce = secrets.token_bytes(NONCE_BYTES)

        async def work(conn: Conn) -> ExportRow:
            export = await store_exports.get_export(conn, request_id, for_update=True)
            if export is None:
                raise not_found("export of the data request")
            now = self._clock()
            if export.purged_at is not None or now >= export.expires_at:
                raise export_gone()
            if export.downloads_remaining <= 0:
                raise failed_precondition(
                    "DOWNLOAD_LIMIT_REACHED", "the export was downloaded the allowed times"
                )
            await store_exports.start_download(conn, request_id, nonce, now, now + DOWNLOAD_WINDOW)
            await store.append_audit(conn, _event(caller, export, "export.downloaded"))
            found = await store_exports.get_export(conn, request_id)
            assert found is not None
            return found

        return await in_transaction(self._pool, work), nonce

    async def _resume(
        self, request_id: str, position: dict[str, object]
    ) -> tuple[ExportRow, bytes, int]:
        try:
            nonce = bytes.fromhex(str(position["n"]))
            offset = int(str(position["o"]))
        except (KeyError, ValueError) as exc:
            raise bad_field("page_token", "not a part of a download of this export") from exc
        async with self._pool.acquire() as conn:
            window = await store_exports.download_window(conn, nonce)
            export = await store_exports.get_export(conn, request_id)
        if export is not None and export.purged_at is not None:
            self._open.pop(nonce, None)
            raise export_gone()
        if window is None or window[0] != request_id or export is None:
            raise bad_field("page_token", "not a part of a download of this export")
        if self._clock() >= window[1]:
            raise failed_precondition("DOWNLOAD_EXPIRED", "the download window closed; start again")
        if not 0 < offset < export.archive_size_bytes or offset % PART_BYTES:
            raise bad_field("page_token", "not a part of a download of this export")
        return export, nonce, offset

    async def _archive(self, caller: Caller, export: ExportRow, nonce: bytes) -> bytes:
        cached = self._open.get(nonce)
        if cached is not None:
            return cached
        archive = await self._decrypt(caller, export)
        self._open[nonce] = archive
        while len(self._open) > OPEN_DOWNLOADS:
            self._open.popitem(last=False)
        return archive

    async def _decrypt(self, caller: Caller, export: ExportRow) -> bytes:
        async with self._pool.acquire() as conn:
            ciphertext = await store_exports.archive_ciphertext(conn, export.data_request_id)
        if ciphertext is None:
            raise export_gone()
        plaintexts = await self._crypto.decrypt(
            self._caller,
            export.member_id,
            [(ARCHIVE_CONTEXT, ciphertext)],
            "data request export download",
            caller.subject,
            f"dataRequests/{export.data_request_id}",
        )
        return plaintexts[0]

    async def purge_expired(self) -> int:
        async def work(conn: Conn) -> int:
            due = await store_exports.due_for_purge(conn, self._clock(), PURGE_BATCH)
            if due:
                await store_exports.purge(conn, [e.data_request_id for e in due], self._clock())
                for export in due:
                    await store.append_audit(conn, _event(self._caller, export, "export.purged"))
            return len(due)

        return await in_transaction(self._pool, work)


def _event(caller: Caller, export: ExportRow, action: str) -> AuditEvent:
    return AuditEvent(
        actor=caller.subject,
        actor_role=caller.role,
        action=action,
        subject_id=export.member_id,
        request_id=f"dataRequests/{export.data_request_id}",
    )
