"""The privacy service down while accounts works: UNAVAILABLE, nothing half written, and a
retry with the same request_id succeeds once privacy is back (on the same port)."""

from __future__ import annotations

import asyncio
import time

import grpc
from google.protobuf import field_mask_pb2
from membership.accounts.v1 import accounts_pb2 as pb

from services.privacy.server import SPEC as PRIVACY
from services.runtime.server import start_service
from tests.support.accounts import ACCOUNTS_TABLES, fetch, table_counts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
RETRY_FOR_S = 15.0


async def _register_with_retries(suite: Suite, request: pb.RegisterMemberRequest) -> pb.Member:
    """Retries UNAVAILABLE like a client would while the channel reconnects."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            member: pb.Member = await suite.accounts.RegisterMember(
                request, metadata=suite.auth("wallet-backend"), timeout=5
            )
        except grpc.aio.AioRpcError as err:
            assert err.code() == UNAVAILABLE, err
            assert time.monotonic() < deadline, "privacy came back but accounts did not recover"
            await asyncio.sleep(0.1)
        else:
            return member


async def test_register_while_privacy_is_down_then_retry(suite: Suite) -> None:
    wallet = suite.auth("wallet-backend")
    earlier = await suite.accounts.RegisterMember(
        pb.RegisterMemberRequest(request_id="before", phone="13900139000"), metadata=wallet
    )
    port = suite.privacy_service.port
    await suite.privacy_service.stop(0)
    before = await table_counts(suite.dsn)
    assert before["members"] == 1
    tables = await fetch(
        suite.dsn,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'accounts'",
    )
    assert {r["table_name"] for r in tables} == {*ACCOUNTS_TABLES, "schema_migrations"}, (
        "every table of the accounts schema is counted"
    )

    request = pb.RegisterMemberRequest(
        request_id="while-down", phone="13800138000", email="down@example.com", display_name="D"
    )
    started = time.monotonic()
    err = await expect_error(
        suite.accounts.RegisterMember(request, metadata=wallet),
        UNAVAILABLE,
        reason="PRIVACY_UNAVAILABLE",
    )
    assert time.monotonic() - started < 5, "fails fast, within the outgoing deadline"
    assert err.domain == "accounts.membership"
    # other calls that need privacy fail the same way and change nothing either
    await expect_error(
        suite.accounts.LookupMember(pb.LookupMemberRequest(phone="13900139000"), metadata=wallet),
        UNAVAILABLE,
    )
    await expect_error(
        suite.accounts.UpdateMember(
            pb.UpdateMemberRequest(
                member=pb.Member(name=earlier.name, display_name="New"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                request_id="upd-down",
            ),
            metadata=wallet,
        ),
        UNAVAILABLE,
    )
    await expect_error(
        suite.accounts.GetMember(
            pb.GetMemberRequest(name=earlier.name, view=pb.MEMBER_VIEW_FULL, purpose="x"),
            metadata=suite.auth("officer"),
        ),
        UNAVAILABLE,
    )
    # masked reads need no privacy service
    masked = await suite.accounts.GetMember(pb.GetMemberRequest(name=earlier.name), metadata=wallet)
    assert masked.phone == "139****9000"
    assert await table_counts(suite.dsn) == before, f"half written: {ACCOUNTS_TABLES}"

    restarted = await start_service(PRIVACY, suite.settings, f"127.0.0.1:{port}")
    try:
        assert restarted.port == port
        member = await _register_with_retries(suite, request)
        assert member.phone == "138****8000"
        assert member.member_id != earlier.member_id
        # exactly one member was written for the retried request, and a repeat returns it
        again = await suite.accounts.RegisterMember(request, metadata=wallet)
        assert again.member_id == member.member_id
        counts = await table_counts(suite.dsn)
        assert counts["members"] == 2
        assert counts["registration_requests"] == 2
        full = await suite.accounts.GetMember(
            pb.GetMemberRequest(name=member.name, view=pb.MEMBER_VIEW_FULL, purpose="check"),
            metadata=suite.auth("officer"),
        )
        assert (full.phone, full.email, full.display_name) == (
            "+8613800138000",
            "down@example.com",
            "D",
        )
    finally:
        await restarted.stop(0)
