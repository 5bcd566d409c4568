"""SQL of export bundles and their downloads (migration 004)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from services.privacy.domain.exports import DownloadWindow, Export
from services.runtime.db import Conn

_COLUMNS = (
    "data_request_id, member_id, archive_size_bytes, archive_sha256, downloads_remaining,"
    " created_at, expires_at, purged_at"
)


def _export(r: asyncpg.Record) -> Export:
    values = dict(r)
    values["archive_sha256"] = bytes(values["archive_sha256"])
    return Export(**values)


async def get_export(conn: Conn, data_request_id: str, for_update: bool = False) -> Export | None:
    lock = " FOR UPDATE" if for_update else ""
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM privacy.data_exports WHERE data_request_id = $1{lock}",
        data_request_id,
    )
    return _export(r) if r else None


async def insert_export(conn: Conn, row: Export, ciphertext: bytes) -> None:
    await conn.execute(
        "INSERT INTO privacy.data_exports (data_request_id, member_id, archive_ciphertext,"
        " archive_size_bytes, archive_sha256, downloads_remaining, created_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (data_request_id) DO NOTHING",
        row.data_request_id,
        row.member_id,
        ciphertext,
        row.archive_size_bytes,
        row.archive_sha256,
        row.downloads_remaining,
        row.created_at,
        row.expires_at,
    )


async def archive_ciphertext(conn: Conn, data_request_id: str) -> bytes | None:
    value = await conn.fetchval(
        "SELECT archive_ciphertext FROM privacy.data_exports WHERE data_request_id = $1",
        data_request_id,
    )
    return bytes(value) if value is not None else None


async def start_download(
    conn: Conn, data_request_id: str, nonce: bytes, *, now: datetime, window_end: datetime
) -> None:
    """Counts one download; its later parts are fetched under `nonce` until `window_end`.
    After the last allowed download the bundle expires with that window."""
    await conn.execute(
        "UPDATE privacy.data_exports SET downloads_remaining = downloads_remaining - 1,"
        " expires_at = CASE WHEN downloads_remaining = 1 THEN LEAST(expires_at, $2)"
        " ELSE expires_at END WHERE data_request_id = $1",
        data_request_id,
        window_end,
    )
    await conn.execute(
        "INSERT INTO privacy.export_downloads (token_nonce, data_request_id, started_at,"
        " expires_at) VALUES ($1, $2, $3, $4)",
        nonce,
        data_request_id,
        now,
        window_end,
    )


async def download_window(conn: Conn, nonce: bytes) -> DownloadWindow | None:
    r = await conn.fetchrow(
        "SELECT data_request_id, expires_at FROM privacy.export_downloads WHERE token_nonce = $1",
        nonce,
    )
    return DownloadWindow(r["data_request_id"], r["expires_at"]) if r else None


async def due_for_purge(conn: Conn, now: datetime, limit: int) -> list[Export]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.data_exports WHERE purged_at IS NULL"
        " AND expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [_export(r) for r in rows]


async def purge(conn: Conn, data_request_ids: list[str], now: datetime) -> None:
    await conn.execute(
        "UPDATE privacy.data_exports SET archive_ciphertext = NULL, purged_at = $2"
        " WHERE data_request_id = ANY($1::text[])",
        data_request_ids,
        now,
    )
    await conn.execute(
        "DELETE FROM privacy.export_downloads WHERE data_request_id = ANY($1::text[])",
        data_request_ids,
    )


async def purge_member(conn: Conn, member_id: str, now: datetime) -> list[str]:
    """Purges every export of an erased member; the ids purged."""
    rows = await conn.fetch(
        "UPDATE privacy.data_exports SET archive_ciphertext = NULL, purged_at = $2"
        " WHERE member_id = $1 AND purged_at IS NULL RETURNING data_request_id",
        member_id,
        now,
    )
    return [r["data_request_id"] for r in rows]
