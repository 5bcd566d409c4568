"""One PostgreSQL per test session (embedded via pgserver, or TEST_DATABASE_URL) and a fresh
database per test, cloned from a template that has every service's migrations applied."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from services.accounts.server import SPEC as ACCOUNTS
from services.points.server import SPEC as POINTS
from services.privacy.server import SPEC as PRIVACY
from services.runtime.db import load_migrations, migrate

TEMPLATE_DB = "wm_template"
SPECS = (ACCOUNTS, POINTS, PRIVACY)


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def pg_bin_dir() -> Path | None:
    """Directory of the pg_dump matching the server, when the server is pgserver's."""
    try:
        from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


class PostgresForTests:
    def __init__(self) -> None:
        self._server: object | None = None
        external = os.environ.get("TEST_DATABASE_URL", "")
        if external:
            self.admin_dsn = external
        else:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and
                # falls back to /tmp/runtime-<uid>, which suits pgserver's lock file
                warnings.simplefilter("ignore")
                from pgserver.postgres_server import get_server

            data_dir = Path(tempfile.mkdtemp(prefix="wm-test-pg-"))
            server = get_server(data_dir, cleanup_mode="delete")
            self._server = server
            self.admin_dsn = server.get_uri()
        asyncio.run(self._make_template())

    async def _make_template(self) -> None:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await conn.close()
        conn = await asyncpg.connect(with_database(self.admin_dsn, TEMPLATE_DB))
        try:
            for spec in SPECS:
                await migrate(conn, spec.name, load_migrations(spec.migrations_dir))
        finally:
            await conn.close()

    async def new_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:16]
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        finally:
            await conn.close()
        return with_database(self.admin_dsn, name)

    async def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await conn.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
