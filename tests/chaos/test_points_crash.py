"""kill -9 of the points service, again and again, while settlements and redemptions run
with client retries: nothing acknowledged is lost or applied twice, and the ledger
reconciles."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.harness import Cluster
from tests.chaos.load import Load, Tokens, check_ledger, reconcile

pytestmark = pytest.mark.timeout(120)

LOAD_S = 20.0
KILL_EVERY_S = 3.0
WORKERS = 6
MEMBERS = 20


async def _kill_and_restart(cluster: Cluster, stop: asyncio.Event) -> int:
    kills = 0
    while not stop.is_set():
        await asyncio.sleep(KILL_EVERY_S)
        if stop.is_set():
            break
        cluster.kill("points")
        kills += 1
        # the restart blocks on health probes; the load goes on meanwhile
        await asyncio.to_thread(cluster.start, "points")
    return kills


async def test_acknowledged_writes_survive_kill_9_of_points(cluster: Cluster) -> None:
    tokens = Tokens(cluster.keys_dir)
    load = Load(cluster.addrs["points"], tokens)
    try:
        await load.add_members(MEMBERS, "mcrash")
        stop = asyncio.Event()
        killer = asyncio.create_task(_kill_and_restart(cluster, stop))
        started = time.monotonic()
        await load.run(LOAD_S, WORKERS, "w")
        stop.set()
        kills = await killer
        ledger = load.ledger
        # figures for the log (pytest -s / -rP)
        print(
            f"kills {kills}: {len(ledger.settled)} settlements and {len(ledger.redeemed)}"
            f" redemptions acknowledged, {ledger.retries} retries"
        )
        assert kills >= 4, kills
        assert ledger.errors == []
        assert ledger.gave_up == 0
        # the kills did land in the middle of calls: some were retried
        assert ledger.retries > 0
        assert len(ledger.settled) > 50 and len(ledger.redeemed) > 20, (
            len(ledger.settled),
            len(ledger.redeemed),
            time.monotonic() - started,
        )
        report = await reconcile(load.stub, tokens)
        assert report.ok, list(report.violations)[:5]
        assert await check_ledger(load, cluster.url) == []
    finally:
        await load.close()
