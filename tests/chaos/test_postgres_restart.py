"""PostgreSQL stopped in the middle of the load: every service reports NOT_SERVING while it
is down, SERVING again by itself once it is back, and no acknowledged write is lost."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.chaos.harness import Cluster
from tests.chaos.load import Load, Tokens, check_ledger, reconcile

pytestmark = pytest.mark.timeout(120)

BEFORE_S = 3.0
DOWN_S = 4.0
AFTER_S = 4.0
NOTICED_WITHIN_S = 10.0  # three failed checks, one a second, each bounded by 1 s
RECOVERED_WITHIN_S = 15.0


async def _wait_for(cluster: Cluster, status: str, within_s: float) -> dict[str, str]:
    deadline = time.monotonic() + within_s
    while True:
        seen = {n: await asyncio.to_thread(cluster.health, n) for n in cluster.names}
        if all(s == status for s in seen.values()) or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.2)


async def _outage(cluster: Cluster) -> tuple[dict[str, str], dict[str, str]]:
    await asyncio.sleep(BEFORE_S)
    await asyncio.to_thread(cluster.stop_postgres)
    down = await _wait_for(cluster, "NOT_SERVING", NOTICED_WITHIN_S)
    await asyncio.sleep(DOWN_S)
    await asyncio.to_thread(cluster.start_postgres)
    up = await _wait_for(cluster, "SERVING", RECOVERED_WITHIN_S)
    return down, up


async def test_services_ride_out_a_postgres_restart(cluster: Cluster) -> None:
    tokens = Tokens(cluster.keys_dir)
    load = Load(cluster.addrs["points"], tokens, give_up_s=60.0)
    try:
        await load.add_members(10, "mpg")
        outage = asyncio.create_task(_outage(cluster))
        await load.run(BEFORE_S + DOWN_S + AFTER_S + 2.0, 4, "g")
        down, up = await outage
        assert set(down.values()) == {"NOT_SERVING"}, down
        assert set(up.values()) == {"SERVING"}, up
        ledger = load.ledger
        print(
            f"{len(ledger.settled)} settlements and {len(ledger.redeemed)} redemptions"
            f" acknowledged, {ledger.retries} retries"
        )
        assert ledger.errors == []
        assert ledger.gave_up == 0
        assert ledger.retries > 0  # calls did fail while it was down, and were retried
        report = await reconcile(load.stub, tokens)
        assert report.ok, list(report.violations)[:5]
        assert await check_ledger(load, cluster.url) == []
    finally:
        await load.close()
