"""Helpers for data-subject request tests: members with a ledger, requests, verification."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import time
import zipfile
from itertools import count
from typing import Any

import grpc
from membership.points.v1 import points_pb2
from membership.privacy.v1 import consent_pb2
from membership.privacy.v1 import data_rights_pb2 as pb

from tests.service.test_points_settlement import payment, settler
from tests.support.accounts import next_request_id, register
from tests.support.postgres import pg_bin_dir
from tests.support.suite import Metadata, Suite

WAIT_S = 15.0
_payments = count(1)


def officer(suite: Suite) -> Metadata:
    return suite.auth("officer", "officer-1")


def wallet(suite: Suite) -> Metadata:
    return suite.auth("wallet-backend", "wallet-app")


async def settle(suite: Suite, member_id: str, amount_minor: int = 10_000) -> str:
    """Settles one payment once points knows the member (accounts' relay tells it)."""
    payment_id = f"pay-{next(_payments)}"
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            await suite.points.SettlePayment(
                payment(member_id, payment_id, amount_minor), metadata=settler(suite)
            )
            return payment_id
        except grpc.aio.AioRpcError as exc:
            # points learns of the member from accounts' relay, within its poll interval
            unknown = exc.code() == grpc.StatusCode.UNAVAILABLE
            if not unknown or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def member_with_ledger(suite: Suite, payments: int = 2, **profile: str) -> str:
    member = await register(suite, **profile)
    for _ in range(payments):
        await settle(suite, member.member_id)
    return member.member_id


async def create(
    suite: Suite,
    member_id: str,
    kind: pb.DataRequestType.ValueType,
    metadata: Metadata | None = None,
    **fields: Any,
) -> pb.DataRequest:
    request = pb.DataRequest(
        member=f"members/{member_id}", type=kind, channel=consent_pb2.CHANNEL_APP, **fields
    )
    created: pb.DataRequest = await suite.data_rights.CreateDataRequest(
        pb.CreateDataRequestRequest(data_request=request, request_id=next_request_id("dsr")),
        metadata=metadata or wallet(suite),
    )
    return created


async def verify(suite: Suite, name: str) -> pb.DataRequest:
    issued = await suite.data_rights.IssueVerificationCode(
        pb.IssueVerificationCodeRequest(name=name), metadata=wallet(suite)
    )
    verified: pb.DataRequest = await suite.data_rights.VerifyIdentity(
        pb.VerifyIdentityRequest(name=name, code=issued.code), metadata=officer(suite)
    )
    return verified


async def approve(suite: Suite, name: str, request_id: str | None = None) -> pb.DataRequest:
    approved: pb.DataRequest = await suite.data_rights.ApproveDataRequest(
        pb.ApproveDataRequestRequest(name=name, request_id=request_id or next_request_id("ok")),
        metadata=officer(suite),
    )
    return approved


async def fulfilled(
    suite: Suite, member_id: str, kind: pb.DataRequestType.ValueType, **fields: Any
) -> pb.DataRequest:
    """A request of the member's, verified and approved."""
    created = await create(suite, member_id, kind, **fields)
    await verify(suite, created.name)
    return await approve(suite, created.name)


async def download(suite: Suite, name: str, metadata: Metadata | None = None) -> dict[str, bytes]:
    """Every part of one download, joined and unpacked: file name -> content."""
    parts, token = [], ""
    while True:
        part = await suite.data_rights.DownloadExport(
            pb.DownloadExportRequest(name=f"{name}/export", page_token=token),
            metadata=metadata or wallet(suite),
        )
        parts.append(part.archive_part)
        token = part.next_page_token
        if not token:
            break
    with zipfile.ZipFile(io.BytesIO(b"".join(parts))) as archive:
        return {n: archive.read(n) for n in archive.namelist()}


async def balance_of(suite: Suite, member_id: str) -> points_pb2.Balance:
    got: points_pb2.Balance = await suite.points.GetBalance(
        points_pb2.GetBalanceRequest(name=f"members/{member_id}/balance"),
        metadata=suite.auth("officer"),
    )
    return got


async def get_request(suite: Suite, name: str) -> pb.DataRequest:
    got: pb.DataRequest = await suite.data_rights.GetDataRequest(
        pb.GetDataRequestRequest(name=name), metadata=officer(suite)
    )
    return got


async def pg_dump(dsn: str) -> str:
    """A plain-SQL dump of the database, with the pg_dump matching the server."""
    bin_dir = pg_bin_dir()
    executable = str(bin_dir / "pg_dump") if bin_dir else shutil.which("pg_dump")
    assert executable, "pg_dump not found"
    proc = await asyncio.create_subprocess_exec(
        executable,
        "--no-owner",
        f"--dbname={dsn}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode()
