"""The runtime's database watch in process: health goes NOT_SERVING when the service's
database refuses connections and SERVING again when it accepts them (no process restart),
and stays SERVING while the service is merely busy (its pool exhausted)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.points.server import SPEC as POINTS
from services.runtime.db import database_failure
from services.runtime.errors import Code
from services.runtime.server import LIVENESS_SERVICE, RunningService, start_service
from tests.support.postgres import PostgresForTests
from tests.support.suite import settings_for

# three failed checks a second apart make an outage
WITHIN_S = 10.0
# more than those three checks
BUSY_FOR_S = 4.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def points(database: str, keys_dir: Path) -> AsyncIterator[RunningService]:
    service = await start_service(POINTS, settings_for(database, keys_dir), "127.0.0.1:0")
    yield service
    await service.stop(0.2)


async def _set_connections(admin_dsn: str, database: str, allowed: bool) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS {str(allowed).lower()}")
        if not allowed:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
    finally:
        await conn.close()


async def _wait_status(port: int, wanted: int, service: str = "") -> int:
    deadline = time.monotonic() + WITHIN_S
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            request = health_pb2.HealthCheckRequest(service=service)
            got = (await stub.Check(request, timeout=2)).status
            if got == wanted or time.monotonic() > deadline:
                return int(got)
            await asyncio.sleep(0.1)


async def test_health_follows_the_database(
    points: RunningService, postgres: PostgresForTests, database: str
) -> None:
    name = urlsplit(database).path.lstrip("/")
    assert await _wait_status(points.port, SERVING) == SERVING
    await _set_connections(postgres.admin_dsn, name, allowed=False)
    try:
        assert await _wait_status(points.port, NOT_SERVING) == NOT_SERVING
        # the process itself is alive: a liveness probe must not restart it
        assert await _wait_status(points.port, SERVING, LIVENESS_SERVICE) == SERVING
    finally:
        await _set_connections(postgres.admin_dsn, name, allowed=True)
    assert await _wait_status(points.port, SERVING) == SERVING


async def _statuses_for(port: int, seconds: float) -> set[int]:
    seen = set()
    deadline = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            seen.add((await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status)
            await asyncio.sleep(0.1)
    return seen


async def test_a_saturated_pool_does_not_flip_health(points: RunningService) -> None:
    async with AsyncExitStack() as held:
        # every connection the requests could use, held for longer than an outage takes
        for _ in range(points.pool.get_max_size()):
            await held.enter_async_context(points.pool.acquire())
        assert points.pool.get_idle_size() == 0
        assert await _statuses_for(points.port, BUSY_FOR_S) == {SERVING}


async def test_stop_ends_the_watch(database: str, keys_dir: Path) -> None:
    service = await start_service(POINTS, settings_for(database, keys_dir), "127.0.0.1:0")
    await service.stop(0.2)
    assert service.watchdog is not None and service.watchdog.cancelled()


def test_connection_losses_are_unavailable_not_internal() -> None:
    # a lost connection surfaces, inside a transaction, as InterfaceError from its exit
    try:
        try:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        except asyncpg.ConnectionDoesNotExistError:
            raise asyncpg.InterfaceError("the underlying connection is closed") from None
    except asyncpg.InterfaceError as exc:
        lost = exc
    for outage in (
        lost,
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InternalClientError('protocol is in the "failed" state'),
    ):
        failure = database_failure(outage)
        assert failure is not None and failure.code == Code.UNAVAILABLE, outage
    # misuse of a connection is a bug, whatever happened before it
    assert database_failure(asyncpg.InterfaceError("another operation is in progress")) is None
    # a file of our own that is missing is a bug too, not an outage
    assert database_failure(FileNotFoundError("rules.toml")) is None
