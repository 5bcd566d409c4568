"""The database watch's logic without a database: how many failed checks make an outage, a
check bounded as a whole, its connection dropped and reopened, and a watch that dies logged."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from services.runtime.db import DatabaseCheck, follow_checks
from services.runtime.server import _watch_ended


class ChecksDone(Exception):
    """Ends `follow_checks` once the scripted answers run out."""


def scripted(answers: list[bool]) -> Iterator[bool]:
    yield from answers
    raise ChecksDone


async def changes_after(answers: list[bool], failures: int = 3) -> list[bool]:
    seen: list[bool] = []
    script = scripted(answers)

    async def check() -> bool:
        return next(script)

    async def on_change(reachable: bool) -> None:
        seen.append(reachable)

    with pytest.raises(ChecksDone):
        await follow_checks(check, on_change, interval_s=0, failures=failures)
    return seen


async def test_a_single_failed_check_does_not_mark_the_database_unreachable() -> None:
    assert await changes_after([False, True, False, False, True, False]) == []


async def test_consecutive_failures_mark_it_unreachable_and_one_success_back() -> None:
    assert await changes_after([True, False, False, False, False, True, True]) == [False, True]


class HangingConnection:
    """A connection on the far side of a silent network partition."""

    def __init__(self) -> None:
        self.terminated = False

    async def fetchval(self, query: str) -> int:
        await asyncio.sleep(3600)
        return 1

    def is_closed(self) -> bool:
        return self.terminated

    def terminate(self) -> None:
        self.terminated = True


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[HangingConnection]:
    made: list[HangingConnection] = []

    async def connect(dsn: str, **options: float) -> HangingConnection:
        made.append(HangingConnection())
        return made[-1]

    monkeypatch.setattr(asyncpg, "connect", connect)
    return made


async def test_a_check_that_hangs_fails_within_its_timeout_and_reconnects(
    connections: list[HangingConnection],
) -> None:
    check = DatabaseCheck("postgresql://nobody@127.0.0.1/none", timeout_s=0.2)
    started = time.monotonic()
    assert await check.answers() is False
    assert time.monotonic() - started < 1.0
    assert connections[0].terminated  # never reused: it may be the thing that hangs
    assert await check.answers() is False
    assert len(connections) == 2


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections and never answers: connecting itself hangs."""

    async def ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(ignore, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_connecting_is_bounded_by_the_check_timeout(silent_server: int) -> None:
    check = DatabaseCheck(f"postgresql://nobody@127.0.0.1:{silent_server}/none", timeout_s=0.2)
    started = time.monotonic()
    assert await check.answers() is False
    assert time.monotonic() - started < 1.0
    await check.close()


async def test_a_watch_that_dies_is_logged_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise ValueError("postgresql://user:secret@db/members")

    task = asyncio.create_task(broken())
    task.add_done_callback(_watch_ended)
    await asyncio.wait([task])
    await asyncio.sleep(0)  # done-callbacks run on the next turn of the loop
    [record] = [r for r in caplog.records if r.name == "membership.server"]
    assert record.levelno == logging.ERROR
    assert getattr(record, "fields", None) == {"error": "ValueError"}
    assert "secret" not in caplog.text
