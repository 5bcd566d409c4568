"""Shared runtime: migrations runner, health, config."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.config import ConfigError, load_settings
from services.runtime.db import (
    MigrationChecksumError,
    SchemaTooNewError,
    load_migrations,
    migrate,
)
from tests.support.suite import Suite


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def test_migrations_apply_once_in_order(database: str, tmp_path: Path) -> None:
    migrations = _write(
        tmp_path / "m",
        {
            "001_first.sql": "CREATE TABLE demo.a (id int PRIMARY KEY);",
            "002_second.sql": "ALTER TABLE demo.a ADD COLUMN note text;",
        },
    )
    conn = await asyncpg.connect(database)
    try:
        assert await migrate(conn, "demo", load_migrations(migrations)) == 2
        assert await migrate(conn, "demo", load_migrations(migrations)) == 2
        rows = await conn.fetch("SELECT version, name FROM demo.schema_migrations ORDER BY 1")
        assert [(r["version"], r["name"]) for r in rows] == [(1, "first"), (2, "second")]
        await conn.execute("INSERT INTO demo.a (id, note) VALUES (1, 'x')")
    finally:
        await conn.close()


async def test_refuses_a_schema_newer_than_the_code(database: str, tmp_path: Path) -> None:
    full = _write(
        tmp_path / "new",
        {"001_a.sql": "SELECT 1;", "002_b.sql": "SELECT 2;"},
    )
    older = _write(tmp_path / "old", {"001_a.sql": "SELECT 1;"})
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn, "demo", load_migrations(full))
        with pytest.raises(SchemaTooNewError):
            await migrate(conn, "demo", load_migrations(older))
    finally:
        await conn.close()


async def test_refuses_a_changed_migration(database: str, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    conn = await asyncpg.connect(database)
    try:
        await migrate(conn, "demo", load_migrations(directory))
        (directory / "001_a.sql").write_text("SELECT 42;")
        with pytest.raises(MigrationChecksumError):
            await migrate(conn, "demo", load_migrations(directory))
    finally:
        await conn.close()


def test_migration_files_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without gaps"):
        load_migrations(_write(tmp_path / "gap", {"001_a.sql": "", "003_c.sql": ""}))
    with pytest.raises(ValueError, match="NNN_title"):
        load_migrations(_write(tmp_path / "bad", {"1_a.sql": ""}))


async def test_failed_migration_leaves_nothing_applied(database: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {"001_ok.sql": "CREATE TABLE demo.ok (id int);", "002_bad.sql": "CREATE TABLE nope.x ();"},
    )
    conn = await asyncpg.connect(database)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, "demo", load_migrations(directory))
        versions = await conn.fetch("SELECT version FROM demo.schema_migrations")
        assert [r["version"] for r in versions] == [1]
    finally:
        await conn.close()


async def test_health_serving_without_token_and_not_serving_on_shutdown(suite: Suite) -> None:
    stub = health_pb2_grpc.HealthStub(suite.accounts_channel)
    for service in ("", "membership.accounts.v1.AccountsService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await suite.accounts_service.health.enter_graceful_shutdown()
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_unknown_method_is_unimplemented(suite: Suite) -> None:
    call = suite.accounts_channel.unary_unary("/membership.accounts.v1.AccountsService/Nope")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(b"", metadata=suite.auth("admin"), timeout=2)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_config_rejects_malformed_numbers() -> None:
    with pytest.raises(ConfigError, match="MEMBERSHIP_DB_POOL_MAX"):
        load_settings({"MEMBERSHIP_DB_POOL_MAX": "many"})
    with pytest.raises(ConfigError, match="between"):
        load_settings({"MEMBERSHIP_SHUTDOWN_GRACE_S": "-1"})
    settings = load_settings({"MEMBERSHIP_ACCOUNTS_ADDR": "127.0.0.1:6000"})
    assert settings.addr_of("accounts") == "127.0.0.1:6000"
    assert settings.addr_of("privacy") == "127.0.0.1:50053"
