"""Pooled connections go back without asyncpg's reset round trip, so nothing may leave
session state on them: an open transaction is rolled back by asyncpg, and session locks
are released by `session_lock` or die with a terminated connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.runtime.db import create_pool, session_lock

LOCK = (0x74657374, 1)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database, 1, 1)  # one connection: every borrow is the same
    try:
        yield pool
    finally:
        await pool.close()


async def _lock_is_free(dsn: str) -> bool:
    other = await asyncpg.connect(dsn)
    try:
        taken = bool(await other.fetchval("SELECT pg_try_advisory_lock($1, $2)", *LOCK))
        if taken:
            await other.execute("SELECT pg_advisory_unlock($1, $2)", *LOCK)
        return taken
    finally:
        await other.close()


async def test_a_session_lock_is_released_after_its_block_even_on_error(
    pool: asyncpg.Pool, database: str
) -> None:
    with pytest.raises(LookupError):
        async with pool.acquire() as conn, session_lock(conn, *LOCK):
            assert not await _lock_is_free(database)
            raise LookupError("the work failed")
    assert await _lock_is_free(database)


async def test_a_connection_whose_unlock_fails_is_terminated(
    pool: asyncpg.Pool, database: str
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.PostgresError):
            async with session_lock(conn, *LOCK):
                # an aborted transaction refuses every statement, the unlock too
                await conn.execute("BEGIN")
                await conn.execute("SELECT 1 / 0")
    assert await _lock_is_free(database)  # the terminated session took its lock along
    assert await pool.fetchval("SELECT 1") == 1  # the pool replaced the connection


async def test_a_connection_released_inside_a_transaction_comes_back_rolled_back(
    pool: asyncpg.Pool,
) -> None:
    await pool.execute("CREATE TABLE public.notes (n int)")
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO public.notes VALUES (1)")
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT count(*) FROM public.notes") == 0
