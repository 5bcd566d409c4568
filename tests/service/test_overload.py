"""A burst above a server's concurrency limit: every call the server turns away is
RESOURCE_EXHAUSTED ("slow down"), never UNAVAILABLE ("down"), also on a single channel."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc

from services.points.server import SPEC as POINTS
from services.runtime.server import start_service
from tests.support.suite import Suite

BURST = 500
LIMIT = 32


async def _burst(
    stub: points_pb2_grpc.PointsServiceStub, suite: Suite, db: asyncpg.Connection
) -> list[object]:
    """BURST reads at once while the table they read is locked: LIMIT of them are in
    flight until the lock goes, so everything beyond is turned away."""
    metadata = suite.auth("wallet-backend")
    async with db.transaction():
        await db.execute("LOCK TABLE points.members IN ACCESS EXCLUSIVE MODE")
        calls = [
            asyncio.ensure_future(
                stub.GetBalance(
                    pb.GetBalanceRequest(name=f"members/m{i}/balance"),
                    metadata=metadata,
                    timeout=30,
                )
            )
            for i in range(BURST)
        ]
        for _ in range(300):  # the turned-away calls come back while the lock is held
            if sum(c.done() for c in calls) >= BURST - LIMIT:
                break
            await asyncio.sleep(0.05)
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_a_burst_of_500_on_one_channel_is_answered_or_resource_exhausted(
    suite: Suite, db: asyncpg.Connection
) -> None:
    settings = dataclasses.replace(suite.settings, max_concurrent_rpcs=LIMIT)
    service = await start_service(POINTS, settings, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            results = await _burst(points_pb2_grpc.PointsServiceStub(channel), suite, db)
    finally:
        await service.stop(0.2)
    codes = Counter(
        r.code() if isinstance(r, grpc.aio.AioRpcError) else grpc.StatusCode.OK for r in results
    )
    # unknown members: NOT_FOUND is the answer of a call the server took
    assert set(codes) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= BURST - LIMIT - LIMIT, codes
    assert codes[grpc.StatusCode.NOT_FOUND] >= LIMIT, codes
