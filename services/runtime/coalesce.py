"""Concurrent calls that share one batch (group commit).

Each call's item waits in a queue; a batch takes whatever has queued, up to `max_batch`,
as soon as fewer than `max_in_flight` batches are running. Alone, a call is a batch of one
and waits for nothing; under load, the calls that arrive while batches are running share
the next one, so a fixed cost per batch (round trips, a commit) is paid once for many calls.

`linger_s` (0: off) lets a batch that could start wait that long for more items, but only
while another batch is running and the queue is short of `max_batch`: the callers of a
batch that just finished send their next calls over the following milliseconds, and without
the wait the first of them would start a batch of one, the rest queueing behind it. So the
added latency is at most `linger_s` per batch, and only under load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """`run_batch(items)` returns one result per item, in order; if it raises, every call of
    that batch raises the same exception. A cancelled call's item may still run (its
    result is dropped), so `run_batch` must be safe to apply to it: idempotent work only."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        max_batch: int,
        max_in_flight: int,
        linger_s: float = 0.0,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        if not 0 <= linger_s <= 1:
            raise ValueError("linger_s must be between 0 and 1")
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._linger_s = linger_s
        self._lingering: asyncio.TimerHandle | None = None
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._running: set[asyncio.Task[None]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._start_batches()
        return await future

    def _start_batches(self) -> None:
        if self._lingering is not None:
            # a wait is on: it ends early when the batch is full or nothing else runs
            if len(self._queue) < self._max_batch and self._running:
                return
            self._lingering.cancel()
            self._lingering = None
        elif self._should_linger():
            loop = asyncio.get_running_loop()
            self._lingering = loop.call_later(self._linger_s, self._linger_over)
            return
        self._start_now()

    def _should_linger(self) -> bool:
        """Under load (another batch running), with a slot free and room in the batch."""
        return (
            self._linger_s > 0
            and 0 < len(self._running) < self._max_in_flight
            and 0 < len(self._queue) < self._max_batch
        )

    def _linger_over(self) -> None:
        self._lingering = None
        self._start_now()

    def _start_now(self) -> None:
        while self._queue and len(self._running) < self._max_in_flight:
            count = min(self._max_batch, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._start_batches()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        live = [(item, future) for item, future in batch if not future.cancelled()]
        if not live:
            return
        try:
            results = await self._run_batch([item for item, _ in live])
            if len(results) != len(live):
                raise RuntimeError("a batch returned a different number of results")
        except asyncio.CancelledError:  # shutting down: its callers are cancelled too
            for _, future in live:
                future.cancel()
            raise
        except Exception as exc:  # every caller of the batch learns why it failed
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)
