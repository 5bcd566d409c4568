"""Scrape-time probes whose service's loop is gone: left out of the scrape, never a failed
/metrics."""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg

from services.runtime.scrape import ProbeSet, schema_probe


def test_a_probe_set_whose_loop_closed_answers_nothing() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    # never touched: nothing can run on a closed loop
    pool = cast(asyncpg.Pool, object())
    assert ProbeSet(pool, loop, [schema_probe("points")]).samples() == {}
