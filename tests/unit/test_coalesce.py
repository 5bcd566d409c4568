"""Coalescer: concurrent calls share batches, bounded in size and number, and every caller
gets its own result or its batch's error."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.points import settings as points_settings
from services.runtime.coalesce import Coalescer
from services.runtime.config import ConfigError, load_settings


class Recorder:
    """A batch function that records each batch and can be held or made to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.running = 0
        self.most_running = 0
        self.fail_with: Exception | None = None

    async def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            if self.fail_with is not None:
                raise self.fail_with
            return [i * 10 for i in items]
        finally:
            self.running -= 1


async def settle() -> None:
    """Lets every ready task run up to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_call_is_a_batch_of_one() -> None:
    run = Recorder()
    coalescer = Coalescer(run, max_batch=10, max_in_flight=1)
    assert await coalescer.submit(7) == 70
    assert run.batches == [[7]]


async def test_calls_that_arrive_while_a_batch_runs_share_the_next_one() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=3, max_in_flight=1)
    calls = [asyncio.create_task(coalescer.submit(i)) for i in range(8)]
    await settle()
    assert run.batches == [[0]]  # the first started alone; the rest wait for it
    run.gate.set()
    assert await asyncio.gather(*calls) == [i * 10 for i in range(8)]
    assert run.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]  # in order, at most max_batch
    assert run.most_running == 1


async def test_batches_in_flight_are_bounded() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=1, max_in_flight=2)
    calls = [asyncio.create_task(coalescer.submit(i)) for i in range(5)]
    await settle()
    assert coalescer.in_flight == 2
    run.gate.set()
    await asyncio.gather(*calls)
    assert run.most_running == 2
    assert coalescer.in_flight == 0


async def test_every_caller_of_a_failed_batch_gets_its_error_and_later_calls_work() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=10, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit(1))
    await settle()
    rest = [asyncio.create_task(coalescer.submit(i)) for i in (2, 3)]
    run.fail_with = RuntimeError("database unavailable")
    run.gate.set()
    for call in (first, *rest):
        with pytest.raises(RuntimeError, match="database unavailable"):
            await call
    run.fail_with = None
    assert await coalescer.submit(4) == 40


async def test_a_caller_cancelled_before_its_batch_starts_is_left_out() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=10, max_in_flight=1)
    first = asyncio.create_task(coalescer.submit(1))
    await settle()
    gone = asyncio.create_task(coalescer.submit(2))
    kept = asyncio.create_task(coalescer.submit(3))
    await settle()
    gone.cancel()
    await settle()
    run.gate.set()
    assert await first == 10
    assert await kept == 30
    assert run.batches == [[1], [3]]


async def test_a_batch_with_the_wrong_number_of_results_fails_its_callers() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items)[:-1]

    coalescer = Coalescer(short, max_batch=10, max_in_flight=1)
    with pytest.raises(RuntimeError, match="different number of results"):
        await coalescer.submit(1)


async def test_a_lone_call_never_lingers() -> None:
    run = Recorder()
    coalescer = Coalescer(run, max_batch=10, max_in_flight=2, linger_s=0.5)
    started = asyncio.get_running_loop().time()
    assert await coalescer.submit(7) == 70
    assert asyncio.get_running_loop().time() - started < 0.25
    assert run.batches == [[7]]


async def test_under_load_a_free_slot_lingers_for_the_calls_that_follow() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=10, max_in_flight=2, linger_s=0.05)
    first = asyncio.create_task(coalescer.submit(0))
    await settle()
    # a batch runs and a slot is free: the next calls, arriving one by one, share one batch
    later = []
    for i in range(1, 4):
        later.append(asyncio.create_task(coalescer.submit(i)))
        await settle()
    assert run.batches == [[0]]
    run.gate.set()
    assert await asyncio.gather(first, *later) == [0, 10, 20, 30]
    assert run.batches == [[0], [1, 2, 3]]


async def test_a_full_batch_ends_the_wait() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=2, max_in_flight=2, linger_s=0.5)
    first = asyncio.create_task(coalescer.submit(0))
    await settle()
    later = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    await settle()
    assert run.batches == [[0], [1, 2]]  # started at once: full
    run.gate.set()
    await asyncio.gather(first, *later)


async def test_the_wait_ends_when_nothing_else_runs() -> None:
    run = Recorder()
    run.gate.clear()
    coalescer = Coalescer(run, max_batch=10, max_in_flight=2, linger_s=0.5)
    first = asyncio.create_task(coalescer.submit(0))
    await settle()
    second = asyncio.create_task(coalescer.submit(1))
    await settle()
    assert run.batches == [[0]]  # lingering
    run.gate.set()
    started = asyncio.get_running_loop().time()
    assert list(await asyncio.gather(first, second)) == [0, 10]
    assert asyncio.get_running_loop().time() - started < 0.25  # not the whole 0.5 s
    assert run.batches == [[0], [1]]


def test_linger_is_bounded() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder(), max_batch=1, max_in_flight=1, linger_s=2)
    with pytest.raises(ValueError):
        Coalescer(Recorder(), max_batch=1, max_in_flight=1, linger_s=-0.1)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(Recorder(), max_batch=0, max_in_flight=1)


def test_the_points_linger_setting_is_in_milliseconds_and_bounded() -> None:
    def linger_s(value: str) -> float:
        env = {points_settings.SETTLEMENT_LINGER_ENV: value}
        return points_settings.load(load_settings(env)).settlement_linger_s

    assert linger_s("") == 0.0
    assert linger_s("1.5") == 0.0015
    for bad in ("-1", "101", "soon"):
        with pytest.raises(ConfigError):
            linger_s(bad)
