from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from services.runtime.db import create_pool
from tests.support.postgres import PostgresForTests
from tests.support.suite import Suite, running_suite


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresForTests]:
    pg = PostgresForTests()
    yield pg
    pg.close()


@pytest.fixture
async def database(postgres: PostgresForTests) -> AsyncIterator[str]:
    dsn = await postgres.new_database()
    yield dsn
    await postgres.drop_database(dsn)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
async def db(suite: Suite) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the suite's database, for checking what was written."""
    conn = await asyncpg.connect(suite.dsn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def pool(suite: Suite) -> AsyncIterator[asyncpg.Pool]:
    """A pool of its own on the suite's database: code under test with it acts as another
    replica of a service would."""
    made = await create_pool(suite.dsn, 1, 4)
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def suite(database: str, keys_dir: Path) -> AsyncIterator[Suite]:
    async with running_suite(database, keys_dir) as running:
        yield running
