"""asyncpg pool and migrations runner: ordered SQL per service, advisory lock, version table."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

log = logging.getLogger("membership.db")

# what store functions take: a connection, or one borrowed from a pool
Conn = asyncpg.Connection | PoolConnectionProxy

MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# keeps two processes of the same service from migrating at once
MIGRATION_LOCK_NAMESPACE = 0x6D656D62  # "memb"
STATEMENT_TIMEOUT_MS = 10_000


class SchemaTooNewError(RuntimeError):
    """The database holds migrations this code does not know: refuse to serve."""


class MigrationChecksumError(RuntimeError):
    """An applied migration's file changed since it was applied."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name must be NNN_title.sql: {path.name}")
        migrations.append(Migration(int(match[1]), match[2], path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations in {directory} must be numbered 001.. without gaps")
    return migrations


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big") & 0x7FFFFFFF


async def migrate(conn: Conn, schema: str, migrations: list[Migration]) -> int:
    """Applies what is missing; returns the schema version. Raises on a newer or altered schema."""
    await conn.execute(
        "SELECT pg_advisory_lock($1, $2)", MIGRATION_LOCK_NAMESPACE, _lock_key(schema)
    )
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
        applied = {r["version"]: r["checksum"] for r in rows}
        known = {m.version: m for m in migrations}
        newer = sorted(v for v in applied if v not in known)
        if newer:
            raise SchemaTooNewError(
                f"schema {schema} is at version {max(applied)}, this code knows up to "
                f"{max(known, default=0)}: refusing to serve"
            )
        for version, checksum in applied.items():
            if known[version].checksum != checksum:
                raise MigrationChecksumError(f"migration {schema} {version:03d} was changed")
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version, name, checksum)'
                    " VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info(
                "migration applied",
                extra={"fields": {"schema": schema, "version": migration.version}},
            )
        return max(known, default=0)
    finally:
        await conn.execute(
            "SELECT pg_advisory_unlock($1, $2)", MIGRATION_LOCK_NAMESPACE, _lock_key(schema)
        )


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        server_settings={"statement_timeout": str(STATEMENT_TIMEOUT_MS)},
    )
    assert pool is not None
    return pool
