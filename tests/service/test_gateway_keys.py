"""Gateway API keys against a real PostgreSQL: create / verify / list / revoke / expire, the
verifier's cache (clocks injected), and `membership apikey` printing a key once while the
database keeps only its hash."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway import keys
from gateway.keys import (
    InvalidApiKey,
    KeyNotFound,
    KeyRequestError,
    KeyVerifier,
    RejectReason,
    create_key,
    hash_secret,
    list_keys,
    parse_key,
    revoke_key,
)
from gateway.store import migrate_schema
from membership_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from membership_cli.main import main
from services.runtime.access import ROLE_SCOPES
from services.runtime.db import create_pool

T0 = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)


class Clocks:
    """The verifier's two clocks, moved by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.wall = T0

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += timedelta(seconds=seconds)

    def monotonic(self) -> float:
        return self.mono

    def wall_clock(self) -> datetime:
        return self.wall


@pytest.fixture
async def conn(database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database)
    try:
        await migrate_schema(connection)
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pool(database: str, conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Pool]:
    made = await create_pool(database, 1, 4)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def verifier(pool: Any, clocks: Clocks, **kwargs: Any) -> KeyVerifier:
    return KeyVerifier(pool, monotonic=clocks.monotonic, wall_clock=clocks.wall_clock, **kwargs)


async def rejection(v: KeyVerifier, token: str) -> InvalidApiKey:
    with pytest.raises(InvalidApiKey) as caught:
        await v.verify(token)
    assert not token or token not in str(caught.value)
    return caught.value


def test_the_key_roles_are_roles_the_services_know() -> None:
    assert set(keys.ROLES) <= set(ROLE_SCOPES)


async def test_migrating_twice_is_harmless(conn: asyncpg.Connection) -> None:
    assert await migrate_schema(conn) == await migrate_schema(conn)


async def test_a_created_key_verifies_and_lists_without_its_secret(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "ios-backend", "wallet-backend", None, now=T0)
    key_id, secret = parse_key(plaintext)
    assert plaintext.startswith(f"wm_{record.key_id}_")
    assert key_id == record.key_id and len(secret) == 52
    assert (record.role, record.name, record.created_at) == ("wallet-backend", "ios-backend", T0)
    assert record.expires_at is None and record.revoked_at is None

    verified = await verifier(pool, clocks).verify(plaintext)
    assert (verified.key_id, verified.role) == (record.key_id, "wallet-backend")

    listed = await list_keys(conn)
    assert [r.key_id for r in listed] == [record.key_id]
    assert secret not in json.dumps(listed[0].to_json(T0))
    assert not hasattr(listed[0], "secret_hash")


async def test_only_a_hash_of_the_secret_is_stored(conn: asyncpg.Connection) -> None:
    _, plaintext = await create_key(conn, "acme-pay", "settlement", timedelta(days=30))
    key_id, secret = parse_key(plaintext)
    row = await conn.fetchrow(
        "SELECT secret_hash, hash_scheme FROM gateway.api_keys WHERE key_id = $1", key_id
    )
    assert row is not None
    assert bytes(row["secret_hash"]) == hash_secret(key_id, secret)
    assert row["hash_scheme"] == "sha256-v1"
    texts = [r[0] for r in await conn.fetch("SELECT t::text FROM gateway.api_keys t")]
    assert texts and all(secret not in text and plaintext not in text for text in texts)


async def test_keys_are_distinct_and_the_hash_is_bound_to_its_key_id(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    a, key_a = await create_key(conn, "a", "officer", None)
    b, key_b = await create_key(conn, "b", "officer", None)
    assert a.key_id != b.key_id and key_a != key_b
    # b's secret under a's id: a real secret, but not a's
    forged = f"wm_{a.key_id}_{parse_key(key_b)[1]}"
    error = await rejection(verifier(pool, clocks), forged)
    assert (error.reason, error.key_id) == (RejectReason.WRONG_SECRET, a.key_id)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Bearer wm_x",
        "wm_abc_def",
        "wm_" + "a" * 16 + "_" + "a" * 51,
        "wm_" + "A" * 16 + "_" + "a" * 52,  # keys are lowercase
        "wm_" + "a" * 16 + "_" + "a" * 52 + " ",
        "xx_" + "a" * 16 + "_" + "a" * 52,
        "wm_" + "a" * 16 + "_" + "a" * 52 + "a" * 1000,
    ],
)
async def test_malformed_keys_are_refused_without_asking_the_database(
    token: str, clocks: Clocks
) -> None:
    # no pool at all: a malformed key must not get as far as a query
    error = await rejection(verifier(None, clocks), token)
    assert error.reason is RejectReason.MALFORMED and error.key_id is None


async def test_an_unknown_key_is_refused(pool: asyncpg.Pool, clocks: Clocks) -> None:
    error = await rejection(verifier(pool, clocks), "wm_" + "a" * 16 + "_" + "b" * 52)
    assert (error.reason, error.key_id) == (RejectReason.UNKNOWN, "a" * 16)


async def test_a_revoked_key_is_refused_and_revoking_again_keeps_the_first_time(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "old", "admin", None)
    revoked = await revoke_key(conn, record.key_id, now=T0)
    assert revoked.revoked_at == T0
    again = await revoke_key(conn, record.key_id, now=T0 + timedelta(days=1))
    assert again.revoked_at == T0
    error = await rejection(verifier(pool, clocks), plaintext)
    assert error.reason is RejectReason.REVOKED
    assert (await list_keys(conn))[0].status(T0) == "revoked"


async def test_revoking_an_unknown_or_malformed_id_fails(conn: asyncpg.Connection) -> None:
    with pytest.raises(KeyNotFound):
        await revoke_key(conn, "a" * 16)
    with pytest.raises(KeyRequestError):
        await revoke_key(conn, "not-an-id")


async def test_a_key_expires_exactly_at_its_time_even_while_cached(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "temp", "officer", timedelta(days=1), now=T0)
    assert record.expires_at == T0 + timedelta(days=1)
    v = verifier(pool, clocks)
    clocks.wall = T0 + timedelta(days=1, seconds=-1)
    await v.verify(plaintext)
    clocks.wall = T0 + timedelta(days=1)  # the monotonic clock stands still: still cached
    assert (await rejection(v, plaintext)).reason is RejectReason.EXPIRED
    assert (await list_keys(conn))[0].status(clocks.wall) == "expired"


async def test_a_revocation_takes_effect_once_the_cache_entry_is_older_than_its_ttl(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "k", "wallet-backend", None)
    v = verifier(pool, clocks, cache_ttl_s=30)
    await v.verify(plaintext)
    await revoke_key(conn, record.key_id)
    clocks.advance(29.9)
    await v.verify(plaintext)  # served from the cache: the revocation is not seen yet
    clocks.advance(0.1)
    assert (await rejection(v, plaintext)).reason is RejectReason.REVOKED


async def test_forget_makes_a_revocation_take_effect_at_once(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "k", "wallet-backend", None)
    v = verifier(pool, clocks)
    await v.verify(plaintext)
    await revoke_key(conn, record.key_id)
    v.forget(record.key_id)
    assert (await rejection(v, plaintext)).reason is RejectReason.REVOKED


async def test_a_cached_key_needs_no_database_and_a_wrong_secret_is_still_refused(
    database: str, conn: asyncpg.Connection, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "k", "settlement", None)
    own_pool = await create_pool(database, 1, 1)
    v = verifier(own_pool, clocks)
    await v.verify(plaintext)
    await own_pool.close()
    clocks.advance(10)
    assert (await v.verify(plaintext)).key_id == record.key_id
    wrong = f"wm_{record.key_id}_{'a' * 52}"
    assert (await rejection(v, wrong)).reason is RejectReason.WRONG_SECRET


class CountingPool:
    """A pool that counts how often a connection is borrowed."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.acquired = 0

    def acquire(self) -> AbstractAsyncContextManager[Any]:
        self.acquired += 1
        return self.pool.acquire()


async def test_concurrent_requests_for_an_uncached_key_share_one_query(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    _, plaintext = await create_key(conn, "k", "wallet-backend", None)
    counting = CountingPool(pool)
    v = verifier(counting, clocks)
    results = await asyncio.gather(*(v.verify(plaintext) for _ in range(20)))
    assert len({r.key_id for r in results}) == 1
    # one load, and one write of last_used_at
    assert counting.acquired == 2
    for _ in range(50):
        await v.verify(plaintext)
    assert counting.acquired == 2


class PoolFailingAfter(CountingPool):
    """Lends `good` connections, then the database is out of reach."""

    def __init__(self, pool: asyncpg.Pool, good: int) -> None:
        super().__init__(pool)
        self.good = good

    def acquire(self) -> AbstractAsyncContextManager[Any]:
        if self.acquired >= self.good:
            raise ConnectionRefusedError("database down")
        return super().acquire()


async def test_an_unrecordable_use_does_not_fail_the_request(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "k", "wallet-backend", None)
    v = verifier(PoolFailingAfter(pool, good=1), clocks)
    assert (await v.verify(plaintext)).key_id == record.key_id


async def test_an_unreachable_database_is_no_401(pool: asyncpg.Pool, clocks: Clocks) -> None:
    v = verifier(PoolFailingAfter(pool, good=0), clocks)
    with pytest.raises(ConnectionRefusedError):
        await v.verify("wm_" + "a" * 16 + "_" + "b" * 52)


async def test_unknown_ids_cannot_push_known_keys_out_of_the_cache(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    _, plaintext = await create_key(conn, "k", "wallet-backend", None)
    counting = CountingPool(pool)
    v = verifier(counting, clocks, max_cached=10)
    await v.verify(plaintext)
    for i in range(50):
        made_up = f"wm_{'a' * 15}{'abcdefghijklmnopqrstuvwxyz234567'[i % 32]}_{'c' * 52}"
        await rejection(v, made_up)
    assert v.cached <= 11
    before = counting.acquired
    await v.verify(plaintext)
    assert counting.acquired == before


async def test_last_used_at_is_written_at_most_once_a_minute(
    conn: asyncpg.Connection, pool: asyncpg.Pool, clocks: Clocks
) -> None:
    record, plaintext = await create_key(conn, "k", "wallet-backend", None, now=T0)

    async def last_used() -> datetime | None:
        value: datetime | None = await conn.fetchval(
            "SELECT last_used_at FROM gateway.api_keys WHERE key_id = $1", record.key_id
        )
        return value

    v = verifier(pool, clocks, cache_ttl_s=30)
    await v.verify(plaintext)
    assert await last_used() == T0
    clocks.advance(45)  # past the cache TTL: reloaded, but used less than a minute ago
    await v.verify(plaintext)
    assert await last_used() == T0
    clocks.advance(20)
    await v.verify(plaintext)
    assert await last_used() == T0 + timedelta(seconds=65)
    # another gateway process, with its own cache, does not write again either
    other = verifier(pool, clocks)
    await other.verify(plaintext)
    assert await last_used() == T0 + timedelta(seconds=65)


@pytest.mark.parametrize(
    ("name", "role", "ttl"),
    [
        ("k", "root", None),
        ("k", "service:privacy", None),  # internal roles are not for keys
        ("", "admin", None),
        ("x" * 101, "admin", None),
        ("line\nbreak", "admin", None),
        (" padded", "admin", None),
        ("k", "admin", timedelta(0)),
        ("k", "admin", timedelta(days=-1)),
        ("k", "admin", timedelta(days=3651)),
    ],
)
async def test_invalid_requests_create_nothing(
    conn: asyncpg.Connection, name: str, role: str, ttl: timedelta | None
) -> None:
    with pytest.raises(KeyRequestError):
        await create_key(conn, name, role, ttl)
    assert await list_keys(conn) == []


async def test_the_table_itself_refuses_unknown_roles(conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute(
            "INSERT INTO gateway.api_keys (key_id, name, role, hash_scheme, secret_hash,"
            " created_at) VALUES ($1, 'x', 'root', 'sha256-v1', $2, now())",
            "a" * 16,
            b"\x00" * 32,
        )


# -- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli_db(database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """DATABASE_URL set to a fresh database without the gateway schema (the CLI adds it)."""
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.chdir(tmp_path)
    yield database


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_texts(dsn: str) -> list[str]:
    async def fetch() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return [r[0] for r in await conn.fetch("SELECT t::text FROM gateway.api_keys t")]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def verify_with_new_verifier(dsn: str, token: str) -> keys.KeyRecord:
    async def check() -> keys.KeyRecord:
        made = await create_pool(dsn, 1, 1)
        try:
            return await KeyVerifier(made).verify(token)
        finally:
            await made.close()

    return asyncio.run(check())


def test_cli_create_prints_the_key_once_and_stores_only_its_hash(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "apikey", "create", "--role", "settlement", "--name", "acme")
    assert code == EXIT_OK, err
    plaintext = out.strip()
    assert out == plaintext + "\n"  # stdout is the key alone: KEY=$(membership apikey create)
    key_id, secret = parse_key(plaintext)
    assert key_id in err and "only this once" in err and secret not in err
    assert verify_with_new_verifier(cli_db, plaintext).role == "settlement"
    texts = table_texts(cli_db)
    assert len(texts) == 1 and secret not in texts[0] and key_id in texts[0]

    code, out, err = run(capsys, "apikey", "list")
    assert code == EXIT_OK, err
    assert key_id in out and "settlement" in out and "active" in out and secret not in out


def test_cli_create_json_and_list_json(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "apikey",
        "create",
        "--role",
        "officer",
        "--name",
        "dpo",
        "--ttl-days",
        "7",
        "--json",
    )
    assert code == EXIT_OK
    created = json.loads(out)
    assert created["role"] == "officer" and created["status"] == "active"
    created_at = datetime.fromisoformat(created["created_at"])
    assert datetime.fromisoformat(created["expires_at"]) - created_at == timedelta(days=7)
    secret = parse_key(created["key"])[1]

    code, out, _ = run(capsys, "apikey", "list", "--json")
    assert code == EXIT_OK
    listed = json.loads(out)["keys"]
    assert [k["key_id"] for k in listed] == [created["key_id"]]
    assert "key" not in listed[0] and secret not in out


def test_cli_revoke_is_idempotent_and_the_key_stops_working(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "apikey", "create", "--role", "admin", "--name", "ops")
    plaintext = out.strip()
    key_id = parse_key(plaintext)[0]
    code, out, _ = run(capsys, "apikey", "revoke", key_id)
    assert code == EXIT_OK and f"API key {key_id}" in out and "revoked at" in out
    code, out, _ = run(capsys, "apikey", "revoke", key_id, "--json")
    assert code == EXIT_OK and json.loads(out)["already_revoked"] is True
    with pytest.raises(InvalidApiKey) as caught:
        verify_with_new_verifier(cli_db, plaintext)
    assert caught.value.reason is RejectReason.REVOKED
    _, out, _ = run(capsys, "apikey", "list", "--json")
    assert json.loads(out)["keys"][0]["status"] == "revoked"


def test_cli_errors_have_their_exit_codes(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse: an unknown role lists the roles
        main(["apikey", "create", "--role", "root", "--name", "x"])
    assert exited.value.code == EXIT_USAGE
    assert "wallet-backend" in capsys.readouterr().err
    code, _, err = run(capsys, "apikey", "create", "--role", "admin", "--name", " x")
    assert code == EXIT_USAGE and "name" in err
    code, _, err = run(capsys, "apikey", "revoke", "not-a-key-id")
    assert code == EXIT_USAGE
    code, _, err = run(capsys, "apikey", "revoke", "a" * 16)
    assert code == EXIT_FAILURE and "no API key" in err
    with pytest.raises(SystemExit) as exited:
        main(["apikey", "create", "--role", "admin", "--name", "x", "--ttl-days", "0"])
    assert exited.value.code == EXIT_USAGE


def test_cli_unreachable_database_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/nothing")
    code, out, err = run(capsys, "apikey", "list")
    assert code == EXIT_FAILURE and out == "" and "cannot connect" in err
    assert "nobody" not in err


def test_cli_help_has_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["apikey", "create", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "exit codes:" in out and "--ttl-days" in out
