"""Shared runtime: migrations runner, health, config."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import asyncpg
import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from membership.accounts.v1 import accounts_pb2 as pb
from membership.points.v1 import points_pb2
from prometheus_client import REGISTRY

from services.points.balance import Balances
from services.privacy.server import SPEC as PRIVACY
from services.runtime.config import ConfigError, load_settings
from services.runtime.db import (
    MigrationChecksumError,
    SchemaTooNewError,
    load_migrations,
    migrate,
)
from services.runtime.identity import key_id, load_or_create_signing_key
from services.runtime.metrics import MetricsEndpoint
from services.runtime.server import start_service
from tests.support.rpc_errors import expect_error, rpc_error
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


REGISTER = "/membership.accounts.v1.AccountsService/RegisterMember"


async def test_unparseable_request_is_invalid_argument_after_authentication(
    suite: Suite,
) -> None:
    call = suite.accounts_channel.unary_unary(REGISTER)
    garbage = b"\x12\x03\xff\xfe\xfd"  # field 2 (phone) holding invalid UTF-8
    err = await rpc_error(call(garbage, metadata=suite.auth("wallet-backend"), timeout=2))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.fields == {"request"}
    err = await rpc_error(call(garbage, timeout=2))
    assert err.code == grpc.StatusCode.UNAUTHENTICATED


def _forged_claims_token(suite: Suite, **overrides: object) -> tuple[tuple[str, str], ...]:
    """A token signed with the suite's real key but with claims the signer would refuse."""
    key = load_or_create_signing_key(suite.keys_dir)
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": "forged",
        "aud": suite.settings.token_audience,
        "iat": now,
        "exp": now + 60,
        "role": "admin",
        "scope": "accounts.members.read",
        "jti": "j1",
    }
    claims.update(overrides)
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": key_id(key.public_key())})
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize(
    "overrides",
    [
        {"sub": "x" * 129},
        {"sub": "bell\a"},
        {"jti": ""},
        {"exp": int(time.time()) + 10 * 365 * 86400},
        {"role": "root"},
    ],
    ids=["long-subject", "control-subject", "empty-jti", "ten-year-lifetime", "unknown-role"],
)
async def test_tokens_with_unacceptable_claims_are_unauthenticated(
    suite: Suite, overrides: dict[str, object]
) -> None:
    request = pb.ListMembersRequest()
    await expect_error(
        suite.accounts.ListMembers(request, metadata=_forged_claims_token(suite, **overrides)),
        grpc.StatusCode.UNAUTHENTICATED,
        reason="TOKEN_INVALID",
    )


async def test_rpcs_are_counted_in_prometheus_metrics(suite: Suite) -> None:
    def count(code: str) -> float:
        value = REGISTRY.get_sample_value(
            "membership_rpc_total",
            {"service": "accounts", "method": REGISTER, "code": code},
        )
        return value or 0.0

    ok, bad = count("OK"), count("INVALID_ARGUMENT")
    wallet = suite.auth("wallet-backend")
    await suite.accounts.RegisterMember(
        pb.RegisterMemberRequest(request_id="m-1", phone="13800000001"), metadata=wallet
    )
    await rpc_error(suite.accounts.RegisterMember(pb.RegisterMemberRequest(), metadata=wallet))
    # the server counts in the interceptor's `finally`, which can run just after the client
    # has seen the aborted call's status
    for _ in range(100):
        if (count("OK"), count("INVALID_ARGUMENT")) == (ok + 1, bad + 1):
            break
        await asyncio.sleep(0.02)
    assert (count("OK"), count("INVALID_ARGUMENT")) == (ok + 1, bad + 1)


def test_metrics_endpoint_serves_the_exposition_format() -> None:
    endpoint = MetricsEndpoint("127.0.0.1:0")
    try:
        assert endpoint.port
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5) as r:
            body = r.read().decode()
        assert "membership_rpc_duration_seconds" in body
    finally:
        endpoint.close()


def test_config_rejects_unknown_log_level_and_inverted_pool() -> None:
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        load_settings({"MEMBERSHIP_LOG_LEVEL": "chatty"})
    with pytest.raises(ConfigError, match="POOL_MIN"):
        load_settings({"MEMBERSHIP_DB_POOL_MIN": "9", "MEMBERSHIP_DB_POOL_MAX": "2"})


async def test_start_fails_cleanly_on_a_busy_port(suite: Suite) -> None:
    busy = f"127.0.0.1:{suite.accounts_service.port}"
    with pytest.raises(OSError, match="could not listen"):
        await start_service(PRIVACY, suite.settings, busy)


@pytest.mark.parametrize(
    ("failure", "code", "reason"),
    [
        (
            asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "STATEMENT_TIMEOUT",
        ),
        (TimeoutError(), grpc.StatusCode.DEADLINE_EXCEEDED, "STATEMENT_TIMEOUT"),
        (
            asyncpg.ConnectionDoesNotExistError("connection was closed"),
            grpc.StatusCode.UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
        ),
        (ConnectionRefusedError(), grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"),
        (ZeroDivisionError(), grpc.StatusCode.INTERNAL, "INTERNAL"),
    ],
)
async def test_database_failures_are_retryable_statuses_not_internal_errors(
    suite: Suite,
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    """A statement past its timeout or a database out of reach tells the caller to retry
    (with no SQL or data in the message); anything else stays INTERNAL."""

    async def failing(*_: object) -> None:
        raise failure

    monkeypatch.setattr(Balances, "balance", failing)
    err = await expect_error(
        suite.points.GetBalance(
            points_pb2.GetBalanceRequest(name="members/many/balance"),
            metadata=suite.auth("officer"),
        ),
        code,
        reason=reason,
    )
    assert "SELECT" not in err.message and "statement timeout" not in err.message
