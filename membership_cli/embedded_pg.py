"""The embedded PostgreSQL behind `membership run` when no DATABASE_URL is given.

pgserver ships the binaries, runs initdb on first use and reuses the data folder afterwards.
The suite gets its own database (`membership`) so its schemas never mix with anything else
an operator keeps in the default `postgres` database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

SUITE_DATABASE = "membership"
# pgserver's record of the processes holding the server; it stops the server only when the
# last one lets go, so a launcher that was SIGKILLed would keep it running forever
HANDLE_PIDS_FILE = ".handle_pids.json"
CONNECT_TIMEOUT_S = 10.0


def _import_pgserver() -> ModuleType:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver
        # falls back to /tmp/runtime-<uid>, which is fine for its lock file
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

    return pgserver


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_handles(pgdata: Path) -> None:
    path = pgdata / HANDLE_PIDS_FILE
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


async def _ensure_database(admin_uri: str, name: str) -> None:
    conn = await asyncpg.connect(admin_uri, timeout=CONNECT_TIMEOUT_S)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return
        # another launcher may have created it since the check
        with contextlib.suppress(asyncpg.DuplicateDatabaseError):
            # identifiers cannot be bound as parameters; the name is our own constant
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


class EmbeddedPostgres:
    """A started pgserver instance under `pgdata`; `stop()` releases it."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> str:
        """Starts (or reuses) the server and returns the URI of the suite's database."""
        pgserver = _import_pgserver()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(self.pgdata)
        self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        asyncio.run(_ensure_database(self._server.get_uri(), SUITE_DATABASE))
        return str(self._server.get_uri(SUITE_DATABASE))

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.cleanup()
