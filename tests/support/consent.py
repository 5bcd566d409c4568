"""Consent test support: members privacy knows, purposes files and a second privacy service
that loads one (as a deployment with a new privacy notice would)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import consent_pb2_grpc

from services.privacy.server import SPEC as PRIVACY
from services.privacy.settings import DEFAULT_PURPOSES_FILE, PURPOSES_FILE_ENV
from services.runtime.server import start_service
from tests.support.privacy import PHONE, encrypt
from tests.support.suite import Metadata, Suite

DEFAULT_NOTICES = "notices = [{ version = 1, material = true }]"


def wallet(suite: Suite) -> Metadata:
    return suite.auth("wallet-backend", "wallet-app")


async def known_member(suite: Suite, member_id: str = "mconsent1") -> str:
    """A member privacy knows: encrypting a field for them creates their data key."""
    await encrypt(suite, member_id, [("phone", PHONE)])
    return f"members/{member_id}"


def purposes_file(folder: Path, purpose: str, notices: str) -> Path:
    """The default purposes with one purpose's `notices` array replaced (TOML syntax)."""
    text = DEFAULT_PURPOSES_FILE.read_text(encoding="utf-8")
    head, section, tail = text.partition(f"[purposes.{purpose}]\n")
    assert section and DEFAULT_NOTICES in tail, purpose
    path = folder / f"purposes-{purpose}.toml"
    path.write_text(
        head + section + tail.replace(DEFAULT_NOTICES, f"notices = {notices}", 1), encoding="utf-8"
    )
    return path


@contextlib.asynccontextmanager
async def privacy_with_purposes(
    suite: Suite, purposes: Path
) -> AsyncIterator[consent_pb2_grpc.ConsentServiceStub]:
    """A second privacy service on the suite's database whose purposes file is `purposes`
    (named in its settings, as the variable would)."""
    env = {**suite.settings.env, PURPOSES_FILE_ENV: str(purposes)}
    settings = dataclasses.replace(suite.settings, env=env)
    service = await start_service(PRIVACY, settings, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield consent_pb2_grpc.ConsentServiceStub(channel)
    finally:
        await channel.close()
        await service.stop(0.2)


def grant_request(
    member: str,
    *purposes: str,
    version: int = 1,
    request_id: str = "g-1",
    channel: cpb.Channel.ValueType = cpb.CHANNEL_APP,
) -> cpb.GrantConsentRequest:
    return cpb.GrantConsentRequest(
        member=member,
        grants=[cpb.PurposeGrant(purpose=p, notice_version=version) for p in purposes],
        channel=channel,
        request_id=request_id,
    )


def withdraw_request(
    member: str,
    *purposes: str,
    request_id: str = "w-1",
    channel: cpb.Channel.ValueType = cpb.CHANNEL_WEB,
) -> cpb.WithdrawConsentRequest:
    return cpb.WithdrawConsentRequest(
        member=member, purposes=list(purposes), channel=channel, request_id=request_id
    )


async def check(
    stub: consent_pb2_grpc.ConsentServiceStub, suite: Suite, member: str, purpose: str
) -> cpb.CheckConsentResponse:
    response: cpb.CheckConsentResponse = await stub.CheckConsent(
        cpb.CheckConsentRequest(member=member, purpose=purpose), metadata=wallet(suite)
    )
    return response


async def record_count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM privacy.consent_records"))
