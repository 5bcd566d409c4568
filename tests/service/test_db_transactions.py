"""services.runtime.db.in_transaction: bounded retries of deadlocks and serialization
failures, then ABORTED TRANSACTION_CONFLICT; every other error passes through at once. And
in_statement, the same without BEGIN and COMMIT."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from services.runtime.db import Conn, create_pool, in_statement, in_transaction
from services.runtime.errors import Code, DomainError, not_found


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, 1, 4)
    await pool.execute(
        "CREATE TABLE public.counters (id int PRIMARY KEY, n int NOT NULL);"
        " INSERT INTO public.counters VALUES (1, 0), (2, 0)"
    )
    try:
        yield pool
    finally:
        await pool.close()


async def _counters(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch("SELECT n FROM public.counters ORDER BY id")
    return [r["n"] for r in rows]


async def test_a_real_deadlock_is_retried_and_both_transactions_commit(pool: asyncpg.Pool) -> None:
    """Two transactions take two rows in opposite orders; PostgreSQL aborts one of them,
    which runs again once the other has committed."""
    locked = {1: asyncio.Event(), 2: asyncio.Event()}
    runs = {1: 0, 2: 0}

    def work(first: int, second: int) -> Callable[[Conn], Awaitable[int]]:
        async def run(conn: Conn) -> int:
            runs[first] += 1
            await conn.execute("UPDATE public.counters SET n = n + 1 WHERE id = $1", first)
            locked[first].set()
            await locked[second].wait()
            await conn.execute("UPDATE public.counters SET n = n + 1 WHERE id = $1", second)
            return first

        return run

    done = await asyncio.wait_for(
        asyncio.gather(
            in_transaction(pool, work(1, 2)),
            in_transaction(pool, work(2, 1)),
        ),
        timeout=30,
    )
    assert list(done) == [1, 2]
    assert sorted(runs.values()) == [1, 2], "exactly one of them ran twice"
    assert await _counters(pool) == [2, 2], "the aborted attempt left nothing behind"


@pytest.mark.parametrize(
    "error", [asyncpg.DeadlockDetectedError, asyncpg.SerializationError], ids=["40P01", "40001"]
)
async def test_conflicts_are_retried_a_bounded_number_of_times(
    pool: asyncpg.Pool, error: type[Exception]
) -> None:
    calls = 0

    async def always_conflicts(conn: Conn) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("UPDATE public.counters SET n = n + 1 WHERE id = 1")
        raise error("conflict")

    with pytest.raises(DomainError) as caught:
        await in_transaction(pool, always_conflicts, attempts=4)
    assert (caught.value.code, caught.value.reason) == (Code.ABORTED, "TRANSACTION_CONFLICT")
    assert calls == 4
    assert await _counters(pool) == [0, 0], "every attempt was rolled back"


async def test_a_conflict_then_success_returns_the_result(pool: asyncpg.Pool) -> None:
    calls = 0

    async def conflicts_once(conn: Conn) -> str:
        nonlocal calls
        calls += 1
        await conn.execute("UPDATE public.counters SET n = n + 1 WHERE id = 1")
        if calls == 1:
            raise asyncpg.SerializationError("conflict")
        return "done"

    assert await in_transaction(pool, conflicts_once) == "done"
    assert calls == 2
    assert await _counters(pool) == [1, 0]


@pytest.mark.parametrize(
    "error",
    [not_found("thing"), asyncpg.UniqueViolationError("dup"), ValueError("bug")],
    ids=["domain", "unique", "bug"],
)
async def test_other_errors_are_not_retried_and_roll_back(
    pool: asyncpg.Pool, error: Exception
) -> None:
    calls = 0

    async def fails(conn: Conn) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("UPDATE public.counters SET n = n + 1 WHERE id = 2")
        raise error

    with pytest.raises(type(error)):
        await in_transaction(pool, fails)
    assert calls == 1
    assert await _counters(pool) == [0, 0]


async def test_attempts_must_be_positive(pool: asyncpg.Pool) -> None:
    async def nothing(conn: Conn) -> None:
        return None

    with pytest.raises(ValueError, match="attempts"):
        await in_transaction(pool, nothing, attempts=0)


async def test_in_statement_opens_no_transaction_and_returns_the_result(
    pool: asyncpg.Pool,
) -> None:
    async def work(conn: Conn) -> bool:
        await conn.execute("UPDATE public.counters SET n = n + 1 WHERE id = 1")
        return conn.is_in_transaction()

    assert await in_statement(pool, work) is False
    assert await _counters(pool) == [1, 0]


async def test_in_statement_retries_conflicts_a_bounded_number_of_times(
    pool: asyncpg.Pool,
) -> None:
    calls = 0

    async def conflicts_once(conn: Conn) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncpg.DeadlockDetectedError("deadlock")
        return "done"

    assert await in_statement(pool, conflicts_once) == "done"
    assert calls == 2

    async def always_conflicts(conn: Conn) -> None:
        raise asyncpg.SerializationError("conflict")

    with pytest.raises(DomainError) as caught:
        await in_statement(pool, always_conflicts, attempts=2)
    assert caught.value.code is Code.ABORTED
    assert caught.value.reason == "TRANSACTION_CONFLICT"
    with pytest.raises(ValueError, match="attempts"):
        await in_statement(pool, always_conflicts, attempts=0)
