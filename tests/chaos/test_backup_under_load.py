"""`membership backup` while settlements and redemptions run, `membership restore` into a
new database, and a ledger there that reconciles and holds everything acknowledged before
the backup began."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2_grpc

from services.points.server import SPEC as POINTS
from services.runtime.server import start_service
from tests.chaos.harness import Cluster
from tests.chaos.load import Load, Tokens, keys_in_db, reconcile
from tests.support.postgres import with_database
from tests.support.suite import settings_for

pytestmark = pytest.mark.timeout(120)

RESTORED = "restored"
CLI_TIMEOUT_S = 60.0


async def _cli(cluster: Cluster, *args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["MEMBERSHIP_KEYS_DIR"] = str(cluster.keys_dir)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "membership_cli",
        *args,
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    result: dict[str, object] = json.loads(out)
    return result


async def _create_database(url: str, name: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(url, name)


async def _reconcile_restored(url: str, keys_dir: Path, tokens: Tokens) -> bool:
    """A points service of its own on the restored database, asked to Reconcile."""
    service = await start_service(POINTS, settings_for(url, keys_dir), "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        report = await reconcile(points_pb2_grpc.PointsServiceStub(channel), tokens)
        assert report.ok, list(report.violations)[:5]
        return report.checked.transactions > 0
    finally:
        await channel.close()
        await service.stop(0.2)


async def test_backup_under_load_restores_a_consistent_ledger(
    cluster: Cluster, tmp_path: Path
) -> None:
    tokens = Tokens(cluster.keys_dir)
    load = Load(cluster.addrs["points"], tokens)
    archive = tmp_path / "under-load.dump"
    try:
        await load.add_members(10, "mbak")
        running = asyncio.create_task(load.run(8.0, 3, "b"))
        await asyncio.sleep(2.0)
        before_backup = [f"payment:{p}" for p in load.ledger.settled]
        await _cli(cluster, "backup", "--database-url", cluster.url, "--output", str(archive))
        await running
        assert load.ledger.errors == [] and load.ledger.gave_up == 0
        assert len(load.ledger.settled) > len(before_backup) > 0  # the load ran through it

        restored = await _create_database(cluster.url, RESTORED)
        await _cli(cluster, "restore", "--database-url", restored, "--input", str(archive))
        assert await _reconcile_restored(restored, cluster.keys_dir, tokens)
        found = await keys_in_db(restored, before_backup)
        assert [k for k, n in found.items() if n != 1] == []
    finally:
        await load.close()
