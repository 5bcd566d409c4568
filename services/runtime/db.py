"""asyncpg pool, migrations runner (ordered SQL per service, advisory lock, version table) and
transactions (explicit, or of one statement) retried on deadlocks and serialization failures."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from services.runtime.errors import Code, DomainError

log = logging.getLogger("membership.db")
T = TypeVar("T")
Isolation = Literal["read_committed", "read_uncommitted", "repeatable_read", "serializable"]

# what store functions take: a connection, or one borrowed from a pool
Conn = asyncpg.Connection | PoolConnectionProxy

MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# keeps two processes of the same service from migrating at once
MIGRATION_LOCK_NAMESPACE = 0x6D656D62  # "memb"
STATEMENT_TIMEOUT_MS = 10_000

# PostgreSQL gave up one side of a conflict (40P01, 40001): running the transaction again
# may succeed once the other side has committed
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
RETRY_BASE_DELAY_S = 0.01
RETRY_MAX_DELAY_S = 0.2


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


@asynccontextmanager
async def session_lock(conn: Conn, namespace: int, key: int) -> AsyncIterator[None]:
    """A session-level advisory lock held for the block.

    Pooled connections are released without a reset round trip (see `create_pool`), so a
    lock must never outlive its block: when the unlock does not complete (an error, a
    cancellation), the connection is terminated and its session's locks die with it."""
    await conn.execute("SELECT pg_advisory_lock($1, $2)", namespace, key)
    try:
        yield
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", namespace, key)
        except BaseException:
            conn.terminate()
            raise


async def migrate(conn: Conn, schema: str, migrations: list[Migration]) -> int:
    """Applies what is missing; returns the schema version. Raises on a newer or altered schema."""
    async with session_lock(conn, MIGRATION_LOCK_NAMESPACE, _lock_key(schema)):
        return await _migrate_locked(conn, schema, migrations)


async def _migrate_locked(conn: Conn, schema: str, migrations: list[Migration]) -> int:
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    await conn.execute(
        f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    rows = await conn.fetch(f'SELECT version, checksum FROM "{schema}".schema_migrations')
    applied = {r["version"]: r["checksum"] for r in rows}
    known = {m.version: m for m in migrations}
    _check_applied(schema, applied, known)
    for migration in migrations:
        if migration.version not in applied:
            await _apply(conn, schema, migration)
    return max(known, default=0)


def _check_applied(schema: str, applied: dict[int, str], known: dict[int, Migration]) -> None:
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise SchemaTooNewError(
            f"schema {schema} is at version {max(applied)}, this code knows up to "
            f"{max(known, default=0)}: refusing to serve"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            raise MigrationChecksumError(f"migration {schema} {version:03d} was changed")


async def _apply(conn: Conn, schema: str, migration: Migration) -> None:
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
        "migration applied", extra={"fields": {"schema": schema, "version": migration.version}}
    )


async def _release_without_reset(conn: asyncpg.Connection) -> None:
    """asyncpg's default reset on release costs one round trip per borrow (advisory unlock,
    CLOSE ALL, UNLISTEN, RESET ALL). Nothing here leaves such session state behind: no
    LISTEN, no SET, cursors only inside transactions, and session locks only through
    `session_lock`, which terminates a connection it could not unlock. An open transaction
    is still rolled back by asyncpg before this runs."""


async def create_pool(dsn: str, min_size: int, max_size: int) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        reset=_release_without_reset,
        command_timeout=30,
        server_settings={"statement_timeout": str(STATEMENT_TIMEOUT_MS)},
    )
    if pool is None:  # asyncpg types it optional; it is only None when not awaited
        raise RuntimeError("asyncpg returned no pool")
    return pool


async def in_transaction(
    pool: asyncpg.Pool,
    work: Callable[[Conn], Awaitable[T]],
    attempts: int = 3,
    *,
    isolation: Isolation | None = None,
) -> T:
    """Runs `work(conn)` in one transaction on a pooled connection and returns its result.

    A deadlock (40P01) or serialization failure (40001) rolls the attempt back and runs
    `work` again on a fresh transaction, up to `attempts` runs in all, after a short jittered
    backoff; when every attempt conflicted it raises DomainError ABORTED with reason
    TRANSACTION_CONFLICT (the client may retry the whole call). Any other exception rolls
    back and propagates at once, unchanged.

    `work` may therefore run more than once: it must do nothing but SQL on `conn` (no calls
    to other services, no side effects outside the transaction) and take its locks in a
    fixed order. `isolation` is the transaction's isolation level (default: the server's,
    read committed); serializable transactions are where 40001 comes from.
    """
    return await _with_retries(lambda: _run_once(pool, work, isolation), attempts)


async def in_statement(
    pool: asyncpg.Pool, work: Callable[[Conn], Awaitable[T]], attempts: int = 3
) -> T:
    """Runs `work(conn)` on a pooled connection without BEGIN and COMMIT, and returns its
    result: each statement of `work` is then its own transaction, so each must leave the
    database whole by itself (a change one statement makes entirely, such as a CTE of
    several inserts, or a read). Saves the two round trips of an explicit transaction.
    Retried like `in_transaction` (a deadlock or serialization failure runs `work` again),
    with the same rules for `work`."""
    return await _with_retries(lambda: _run_alone(pool, work), attempts)


async def _with_retries(run: Callable[[], Awaitable[T]], attempts: int) -> T:
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts):
        try:
            return await run()
        except RETRYABLE_ERRORS as exc:
            log.info(
                "transaction conflict; retrying",
                extra={"fields": {"attempt": attempt, "error": type(exc).__name__}},
            )
            await asyncio.sleep(_backoff_s(attempt))
    try:
        return await run()
    except RETRYABLE_ERRORS as exc:
        raise _conflict(attempts) from exc


async def _run_once(
    pool: asyncpg.Pool, work: Callable[[Conn], Awaitable[T]], isolation: Isolation | None
) -> T:
    async with pool.acquire() as conn, conn.transaction(isolation=isolation):
        return await work(conn)


async def _run_alone(pool: asyncpg.Pool, work: Callable[[Conn], Awaitable[T]]) -> T:
    async with pool.acquire() as conn:
        return await work(conn)


# the database is out of reach (down, restarting, out of connections): the call may succeed
# later; anything else asyncpg raises is a bug or a broken invariant
_UNREACHABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ConnectionDoesNotExistError,
    # the server is shutting down (fast shutdown, crash recovery): sessions are being cut
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    ConnectionError,
)


def database_failure(exc: BaseException) -> DomainError | None:
    """What a database failure means to the caller, or None when it is not one: a
    statement that ran past its timeout is DEADLINE_EXCEEDED, an unreachable database
    UNAVAILABLE (both retryable); messages carry no SQL and no data."""
    if isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
        # the server's statement_timeout, or asyncpg's command or acquire timeout
        return DomainError(
            Code.DEADLINE_EXCEEDED,
            "STATEMENT_TIMEOUT",
            "the database did not finish the request in time; retry later",
        )
    if _unreachable(exc):
        return DomainError(
            Code.UNAVAILABLE, "DATABASE_UNAVAILABLE", "the database is unavailable; retry later"
        )
    return None


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, _UNREACHABLE) or _socket_missing(exc):
        return True
    if isinstance(exc, asyncpg.InternalClientError):
        # a connection that received the server's FATAL (a shutdown) while between or inside
        # operations is left in a state no query can start from until its socket closes;
        # the call may be retried on a fresh connection
        return True
    # a connection lost inside a transaction surfaces as InterfaceError ("the underlying
    # connection is closed") from the transaction's exit, raised while handling the loss
    context = exc.__context__
    return isinstance(exc, asyncpg.InterfaceError) and context is not None and _unreachable(context)


def _socket_missing(exc: BaseException) -> bool:
    """A PostgreSQL on a Unix socket (the embedded one) removes the socket file while it is
    stopped, so connecting raises FileNotFoundError rather than a refused connection. Only
    when asyncpg raised it: a missing file of our own is a bug, not an outage."""
    if not isinstance(exc, FileNotFoundError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if "asyncpg" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _backoff_s(attempt: int) -> float:
    """Full jitter: uniform in [0, base * 2^(attempt-1)], capped; spreads the retries of
    the two sides of a conflict apart so that they do not collide again."""
    ceiling = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)  # noqa: S311 - timing jitter, not a secret


def _conflict(attempts: int) -> DomainError:
    return DomainError(
        Code.ABORTED,
        "TRANSACTION_CONFLICT",
        f"the change conflicted with concurrent changes {attempts} times; retry",
    )


# how often a service checks that its database answers, how long one whole check may take,
# and how many checks in a row must fail before it reports NOT_SERVING: one slow answer under
# load must not take a healthy replica out of rotation (readiness would then pile its traffic
# onto the others)
WATCH_INTERVAL_S = 1.0
WATCH_TIMEOUT_S = 1.0
WATCH_FAILURES = 3

# what a failed check may raise; anything else is a bug and ends the watch (and is logged)
_CHECK_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut mid-operation
)


class DatabaseCheck:
    """Whether the database answers `SELECT 1`, asked on one connection of its own.

    Not a pooled connection: when every pooled connection is busy the service is loaded,
    not cut off, and a check waiting for one would report a busy replica as down. The
    connection is opened on first use, dropped after any failure (the next check reconnects)
    and closed by `close`; it is one connection per process beyond the pool."""

    def __init__(self, dsn: str, timeout_s: float = WATCH_TIMEOUT_S) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._conn: asyncpg.Connection | None = None

    async def answers(self) -> bool:
        try:
            # bounds the whole check, connecting included: on a silent network partition a
            # query's own timeout goes on to wait for its cancel request, for up to the
            # connection's command timeout
            async with asyncio.timeout(self._timeout_s):
                conn = await self._connection()
                await conn.fetchval("SELECT 1")
        except _CHECK_FAILURES:
            self._drop()
            return False
        return True

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # on failure asyncpg aborts the connection instead: nothing is left open
        with contextlib.suppress(*_CHECK_FAILURES):
            await conn.close(timeout=self._timeout_s)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s)
        return self._conn

    def _drop(self) -> None:
        """Without a round trip: the connection may be the thing that hangs. Terminating
        also cancels a cancel request asyncpg may still be sending for a timed-out query."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


async def watch_database(
    dsn: str,
    on_change: Callable[[bool], Awaitable[None]],
    interval_s: float = WATCH_INTERVAL_S,
    failures: int = WATCH_FAILURES,
) -> None:
    """Calls `on_change(reachable)` whenever the database goes away or comes back, until
    cancelled; the check's connection is closed on the way out. The service itself keeps
    running through an outage: the pool reconnects by itself, and health (what load
    balancers and probes read) says whether to send it work."""
    check = DatabaseCheck(dsn)
    try:
        await follow_checks(check.answers, on_change, interval_s, failures)
    finally:
        await check.close()


async def follow_checks(
    check: Callable[[], Awaitable[bool]],
    on_change: Callable[[bool], Awaitable[None]],
    interval_s: float = WATCH_INTERVAL_S,
    failures: int = WATCH_FAILURES,
) -> None:
    """Runs `check` every `interval_s`: unreachable after `failures` failed checks in a row,
    reachable again at the first success (a database that answers can take work)."""
    reachable = True
    failed = 0
    while True:
        await asyncio.sleep(interval_s)
        failed = 0 if await check() else failed + 1
        now = failed < failures
        if now != reachable:
            reachable = now
            log.warning("database reachable" if now else "database unreachable")
            await on_change(now)
