"""SQL of the gateway's own schema `gateway`: its API keys. The gateway's only SQL.

Rows come back as `KeyRow`, hash included; `gateway.keys` turns them into the `KeyRecord`s
that callers see, which never carry the hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg

from services.runtime.db import Conn, load_migrations, migrate

SCHEMA = "gateway"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_COLUMNS = (
    "key_id, name, role, hash_scheme, secret_hash, created_at, expires_at, revoked_at, last_used_at"
)


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    name: str
    role: str
    hash_scheme: str
    secret_hash: bytes
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


async def migrate_schema(conn: Conn) -> int:
    """Applies the gateway's migrations (under the runtime's advisory lock), as the services
    do at start-up; returns the schema version."""
    return await migrate(conn, SCHEMA, load_migrations(MIGRATIONS_DIR))


def _row(record: asyncpg.Record) -> KeyRow:
    return KeyRow(
        key_id=record["key_id"],
        name=record["name"],
        role=record["role"],
        hash_scheme=record["hash_scheme"],
        secret_hash=bytes(record["secret_hash"]),
        created_at=record["created_at"],
        expires_at=record["expires_at"],
        revoked_at=record["revoked_at"],
        last_used_at=record["last_used_at"],
    )


async def insert_key(conn: Conn, row: KeyRow) -> None:
    await conn.execute(
        f"INSERT INTO gateway.api_keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        row.key_id,
        row.name,
        row.role,
        row.hash_scheme,
        row.secret_hash,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.last_used_at,
    )


async def get_key(conn: Conn, key_id: str) -> KeyRow | None:
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM gateway.api_keys WHERE key_id = $1", key_id
    )
    return None if record is None else _row(record)


async def list_keys(conn: Conn, limit: int) -> list[KeyRow]:
    records = await conn.fetch(
        f"SELECT {_COLUMNS} FROM gateway.api_keys ORDER BY created_at, key_id LIMIT $1", limit
    )
    return [_row(r) for r in records]


async def revoke_key(conn: Conn, key_id: str, now: datetime) -> KeyRow | None:
    """Marks the key revoked; a key revoked before keeps its first revocation time (so
    revoking is idempotent). None when there is no such key."""
    record = await conn.fetchrow(
        "UPDATE gateway.api_keys SET revoked_at = COALESCE(revoked_at, $2)"
        f" WHERE key_id = $1 RETURNING {_COLUMNS}",
        key_id,
        now,
    )
    return None if record is None else _row(record)


async def touch_key(conn: Conn, key_id: str, now: datetime, min_interval: timedelta) -> None:
    """Records a use, unless one was recorded less than `min_interval` ago: the condition
    keeps several gateway replicas from writing the same row again and again."""
    await conn.execute(
        "UPDATE gateway.api_keys SET last_used_at = $2::timestamptz WHERE key_id = $1"
        " AND (last_used_at IS NULL OR last_used_at <= $2::timestamptz - $3::interval)",
        key_id,
        now,
        min_interval,
    )


async def get_delivery(conn: Conn, client_id: str, signature: str) -> tuple[int, bytes] | None:
    """The answer given to an accepted webhook delivery (by its signature), if any."""
    row = await conn.fetchrow(
        "SELECT response_status, response_body FROM gateway.webhook_deliveries"
        " WHERE client_id = $1 AND signature = $2",
        client_id,
        signature,
    )
    return (row["response_status"], bytes(row["response_body"])) if row else None


async def insert_delivery(
    conn: Conn, client_id: str, signature: str, kind: str, status: int, body: bytes
) -> None:
    await conn.execute(
        "INSERT INTO gateway.webhook_deliveries (client_id, signature, kind, response_status,"
        " response_body) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        client_id,
        signature,
        kind,
        status,
        body,
    )


async def key_names(conn: Conn, key_ids: list[str]) -> dict[str, tuple[str, str]]:
    """(name, role) of each of `key_ids` that exists, revoked and expired keys included
    (a timeline names who acted then). One query for the whole (bounded) batch."""
    records = await conn.fetch(
        "SELECT key_id, name, role FROM gateway.api_keys WHERE key_id = ANY($1::text[])",
        key_ids,
    )
    return {r["key_id"]: (r["name"], r["role"]) for r in records}
