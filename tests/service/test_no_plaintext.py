"""Personal information never rests in PostgreSQL in clear, and never reaches a log line or
an error message."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf import field_mask_pb2
from membership.accounts.v1 import accounts_pb2 as pb

from services.runtime.logs import JsonFormatter
from tests.support.postgres import pg_bin_dir
from tests.support.suite import Suite


@dataclass(frozen=True)
class Person:
    phone: str
    email: str
    name: str

    def needles(self) -> list[str]:
        national = self.phone.removeprefix("+86")
        return [self.phone, national, self.email, self.name]


PEOPLE = [
    Person("+8613912345678", "zhang.wei@example.com", "张伟"),
    Person("+8615887654321", "li.na@mail.example.cn", "李娜"),
    Person("+8618600001111", "wang.fang@example.org", "Wang Fang"),
    Person("+447911123456", "oliver.smith@example.co.uk", "Oliver Smith"),
]
NEW_EMAIL = "chen.jing@example.net"


async def _exercise(suite: Suite) -> None:
    """Registers, reads in clear, updates, freezes, exports and trips error paths."""
    wallet, officer, admin = (
        suite.auth("wallet-backend"),
        suite.auth("officer"),
        suite.auth("admin"),
    )
    names = []
    for i, p in enumerate(PEOPLE):
        m = await suite.accounts.RegisterMember(
            pb.RegisterMemberRequest(
                request_id=f"reg-{i}", phone=p.phone, email=p.email, display_name=p.name
            ),
            metadata=wallet,
        )
        names.append(m.name)
    await suite.accounts.GetMember(
        pb.GetMemberRequest(name=names[0], view=pb.MEMBER_VIEW_FULL, purpose="support ticket"),
        metadata=officer,
    )
    await suite.accounts.LookupMember(
        pb.LookupMemberRequest(phone=PEOPLE[1].phone), metadata=wallet
    )
    await suite.accounts.UpdateMember(
        pb.UpdateMemberRequest(
            member=pb.Member(name=names[2], email=NEW_EMAIL),
            update_mask=field_mask_pb2.FieldMask(paths=["email"]),
            request_id="upd-1",
        ),
        metadata=wallet,
    )
    await suite.accounts.FreezeMember(
        pb.FreezeMemberRequest(name=names[3], request_id="frz-1", reason="risk review"),
        metadata=admin,
    )
    await suite.accounts.ExportMemberData(
        pb.ExportMemberDataRequest(name=names[1], purpose="access request"),
        metadata=suite.auth("service:privacy"),
    )
    await _trip_errors(suite, wallet)


async def _trip_errors(suite: Suite, wallet: tuple[tuple[str, str], ...]) -> list[str]:
    messages = []
    clashes = [
        pb.RegisterMemberRequest(request_id="dup", phone=PEOPLE[0].phone),
        pb.RegisterMemberRequest(request_id="dup-mail", phone="13700000001", email=PEOPLE[1].email),
        pb.RegisterMemberRequest(request_id="bad", phone=PEOPLE[0].phone + "99"),
        pb.RegisterMemberRequest(
            request_id="bad-mail", phone="13700000002", email="x@@" + PEOPLE[2].email
        ),
    ]
    for request in clashes:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await suite.accounts.RegisterMember(request, metadata=wallet)
        messages.append(str(err.value.details()) + repr(err.value.trailing_metadata()))
    return messages


def _needles() -> list[str]:
    values = [n for p in PEOPLE for n in p.needles()] + [NEW_EMAIL]
    return values + [v.encode().hex() for v in values]


async def _pg_dump(dsn: str) -> str:
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


async def test_database_dump_holds_no_personal_information(suite: Suite) -> None:
    await _exercise(suite)
    dump = await _pg_dump(suite.dsn)
    assert "accounts.members" in dump and "privacy.audit_log" in dump
    lowered = dump.lower()
    found = [n for n in _needles() if n.lower() in lowered]
    assert found == []
    # the ciphertexts are there (the dump is not just empty)
    assert dump.count("\\x574d4301") >= 3 * len(PEOPLE)


async def test_logs_and_errors_hold_no_personal_information(
    suite: Suite, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    await _exercise(suite)
    messages = await _trip_errors(suite, suite.auth("wallet-backend"))
    formatter = JsonFormatter("test")
    lines = [formatter.format(r) for r in caplog.records]
    assert any(
        '"method": "/membership.accounts.v1.AccountsService/RegisterMember"' in line
        for line in lines
    ), "the run logged its RPCs"
    text = "\n".join(lines + messages).lower()
    found = [n for n in _needles() if n.lower() in text]
    assert found == []
