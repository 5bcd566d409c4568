"""Erasures survive a restore: a member erased after a backup was taken is erased again when
the suite starts on the restored database (docs/design.md §7), through the real CLI, pg_dump,
pg_restore and services."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2
from membership.privacy.v1 import data_rights_pb2 as pb

from services.privacy.settings import JOURNAL_ENV
from tests.support.data_rights import fulfilled, member_with_ledger, officer
from tests.support.postgres import PostgresForTests
from tests.support.suite import Suite, running_suite

WAIT_S = 15.0
CLI_TIMEOUT_S = 20.0


async def membership(dsn: str, keys_dir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Runs the `membership` command as an operator would; its --json output."""
    env = dict(os.environ, DATABASE_URL=dsn, MEMBERSHIP_KEYS_DIR=str(keys_dir))
    env.pop(JOURNAL_ENV, None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "membership_cli",
        *args,
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    assert proc.returncode is not None
    doc = json.loads(out) if proc.returncode == 0 else {"stderr": err.decode()}
    return proc.returncode, doc


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        assert time.monotonic() < deadline, "not within the wait"
        await asyncio.sleep(0.1)


@pytest.fixture
async def restore_target(postgres: PostgresForTests) -> AsyncIterator[str]:
    """Another database on the same server, already migrated (as a live one would be)."""
    dsn = await postgres.new_database()
    yield dsn
    await postgres.drop_database(dsn)


async def key_destroyed(conn: asyncpg.Connection, member_id: str) -> bool:
    destroyed: bool | None = await conn.fetchval(
        "SELECT bool_and(destroyed_at IS NOT NULL) FROM privacy.subject_keys WHERE subject_id = $1",
        member_id,
    )
    return bool(destroyed)


async def reapplied_deletion(conn: asyncpg.Connection, member_id: str) -> str | None:
    state: str | None = await conn.fetchval(
        "SELECT r.state FROM privacy.data_requests r"
        " JOIN privacy.data_request_events e ON e.data_request_id = r.id"
        " WHERE r.member_id = $1 AND r.type = 'DELETION'"
        " AND e.action = 'reapplied_after_restore'",
        member_id,
    )
    return state


async def member_status(suite: Suite, member_id: str) -> int:
    got = await suite.accounts.GetMember(
        accounts_pb2.GetMemberRequest(name=f"members/{member_id}"), metadata=officer(suite)
    )
    return int(got.status)


async def test_an_erasure_after_the_backup_is_reapplied_when_the_suite_starts_on_it(
    suite: Suite, restore_target: str, tmp_path: Path
) -> None:
    member_id = await member_with_ledger(suite, phone="+8613800771234", email="b@example.com")
    archive = tmp_path / "membership.dump"
    code, taken = await membership(suite.dsn, suite.keys_dir, "backup", "--output", str(archive))
    assert code == 0, taken
    assert taken["schema_versions"].keys() == {"accounts", "points", "privacy"}
    assert taken["size_bytes"] == archive.stat().st_size > 0

    done = await fulfilled(suite, member_id, pb.DATA_REQUEST_TYPE_DELETION)
    assert done.state == pb.DATA_REQUEST_STATE_COMPLETED, done

    code, restored = await membership(
        restore_target, suite.keys_dir, "restore", "--input", str(archive), "--yes"
    )
    assert code == 0, restored
    assert restored["checksum_verified"] and restored["schema_versions"] == taken["schema_versions"]
    assert restored["erasure_journal"]["members"] == 1
    conn = await asyncpg.connect(restore_target)
    try:
        # what the restore brought back: the member's live data key
        assert not await key_destroyed(conn, member_id)
        # the same keys dir, so the same erasure journal
        async with running_suite(restore_target, suite.keys_dir) as again:
            # privacy shredded the key before it served its first call
            assert await key_destroyed(conn, member_id)

            async def completed() -> bool:
                return await reapplied_deletion(conn, member_id) == "COMPLETED"

            await eventually(completed)
            assert await member_status(again, member_id) == accounts_pb2.MEMBER_STATUS_ERASED
            restricted = await conn.fetchval(
                "SELECT count(*) FROM points.member_restrictions WHERE member_id = $1", member_id
            )
            lookups = await conn.fetchval(
                "SELECT count(*) FROM accounts.member_lookup WHERE member_id = $1", member_id
            )
            assert (restricted, lookups) == (1, 0)
            books = await again.points.Reconcile(
                points_pb2.ReconcileRequest(), metadata=again.auth("admin")
            )
            assert books.ok and books.checked.transfers > 0, books
    finally:
        await conn.close()


async def test_a_restore_without_later_erasures_reapplies_nothing(
    suite: Suite, restore_target: str, tmp_path: Path
) -> None:
    member_id = await member_with_ledger(suite, payments=1)
    archive = tmp_path / "membership.dump"
    code, _ = await membership(suite.dsn, suite.keys_dir, "backup", "--output", str(archive))
    assert code == 0
    code, restored = await membership(
        restore_target, suite.keys_dir, "restore", "--input", str(archive), "--yes"
    )
    assert code == 0 and not restored["erasure_journal"]["exists"]
    async with running_suite(restore_target, suite.keys_dir) as again:
        status = await member_status(again, member_id)
        assert status == accounts_pb2.MEMBER_STATUS_ACTIVE
        try:
            balance = await again.points.GetBalance(
                points_pb2.GetBalanceRequest(name=f"members/{member_id}/balance"),
                metadata=again.auth("officer"),
            )
        except grpc.aio.AioRpcError as exc:  # pragma: no cover - the message says why
            pytest.fail(f"the restored ledger is not readable: {exc.code()}")
        original = await suite.points.GetBalance(
            points_pb2.GetBalanceRequest(name=f"members/{member_id}/balance"),
            metadata=suite.auth("officer"),
        )
        assert balance == original
