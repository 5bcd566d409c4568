"""RegisterMember: normalisation, masking, idempotency, uniqueness, referrals, bad input."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from membership.accounts.v1 import accounts_pb2 as pb
from prometheus_client import REGISTRY

from services.accounts.domain.consents import Channel, ConsentGrant
from services.accounts.domain.registration import Registration
from services.accounts.registration import Registrations
from services.accounts.store import registration as store
from services.accounts.store.unique import UniqueViolation
from services.runtime.db import create_pool
from services.runtime.errors import Code, DomainError
from tests.support.accounts import fetch, register, table_counts
from tests.support.rpc_errors import expect_error, rpc_error
from tests.support.suite import Suite

PHONE = "13800138000"
E164 = "+8613800138000"
REFERRAL_CODE = re.compile(r"^[0-9ABCDEFGHJKMNPQRSTVWXYZ]{8}$")

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXISTS = grpc.StatusCode.ALREADY_EXISTS


async def _full(suite: Suite, name: str) -> pb.Member:
    member: pb.Member = await suite.accounts.GetMember(
        pb.GetMemberRequest(name=name, view=pb.MEMBER_VIEW_FULL, purpose="test"),
        metadata=suite.auth("officer"),
    )
    return member


async def test_register_returns_the_masked_view(suite: Suite) -> None:
    member = await register(
        suite, PHONE, email="Alice@Example.com", display_name="张三", request_id="r1"
    )
    assert member.member_id
    assert member.name == f"members/{member.member_id}"
    assert member.phone == "138****8000"
    assert member.email == "a***@example.com"
    assert member.display_name == "张*"
    assert member.view == pb.MEMBER_VIEW_MASKED
    assert member.status == pb.MEMBER_STATUS_ACTIVE
    assert REFERRAL_CODE.match(member.referral_code)
    assert member.referred_by == ""
    assert member.create_time.seconds > 0
    assert member.update_time.seconds > 0
    # and the clear values are what was registered, normalised
    full = await _full(suite, member.name)
    assert (full.phone, full.email, full.display_name) == (E164, "alice@example.com", "张三")
    assert full.view == pb.MEMBER_VIEW_FULL


async def test_optional_fields_may_be_empty(suite: Suite) -> None:
    member = await register(suite, PHONE)
    assert (member.email, member.display_name) == ("", "")
    full = await _full(suite, member.name)
    assert (full.phone, full.email, full.display_name) == (E164, "", "")


async def test_mainland_formats_normalise_to_one_member(suite: Suite) -> None:
    first = await register(suite, "+86 138-0013-8000", request_id="fmt-0")
    full = await _full(suite, first.name)
    assert full.phone == E164
    for i, raw in enumerate(
        [PHONE, E164, "8613800138000", "138 0013 8000", "138-0013-8000", " +86 13800138000 "]
    ):
        err = await expect_error(
            register(suite, raw, request_id=f"fmt-{i + 1}"), EXISTS, reason="PHONE_TAKEN"
        )
        assert "8000" not in err.message, "error messages carry no personal information"
    assert (await table_counts(suite.dsn))["members"] == 1


async def test_foreign_number_keeps_its_country_code(suite: Suite) -> None:
    member = await register(suite, "+44 7911 123456")
    assert member.phone == "+44 791****3456"
    assert (await _full(suite, member.name)).phone == "+447911123456"
    # the same digits without + are read as a (mainland) number, which they are not
    await expect_error(register(suite, "447911123456"), INVALID, fields={"phone"})


async def test_email_is_normalised_and_unique(suite: Suite) -> None:
    first = await register(suite, email="  Bob.Smith@Example.COM ")
    assert first.email == "b***@example.com"
    assert (await _full(suite, first.name)).email == "bob.smith@example.com"
    before = await table_counts(suite.dsn)
    err = await expect_error(
        register(suite, email="bob.smith@example.com"), EXISTS, reason="EMAIL_TAKEN"
    )
    assert err.domain == "accounts.membership"
    assert "bob" not in err.message.lower()
    await expect_error(register(suite, email="BOB.SMITH@example.com"), EXISTS, reason="EMAIL_TAKEN")
    assert await table_counts(suite.dsn) == before


async def test_repeat_with_the_same_request_id_returns_the_first_member(suite: Suite) -> None:
    first = await register(suite, PHONE, email="c@example.com", request_id="same")
    again = await register(suite, PHONE, email="c@example.com", request_id="same")
    assert again.member_id == first.member_id
    assert again.referral_code == first.referral_code
    assert again.create_time == first.create_time
    assert again.phone == "138****8000"
    # the payload is compared after normalisation: another spelling is the same request
    spelled = await register(suite, "+86 138 0013 8000", email="C@Example.com", request_id="same")
    assert spelled.member_id == first.member_id
    counts = await table_counts(suite.dsn)
    assert counts["members"] == 1
    assert counts["registration_requests"] == 1
    assert counts["outbox"] == 1


async def test_same_request_id_with_another_payload_is_key_reuse(suite: Suite) -> None:
    await register(suite, PHONE, request_id="k1")
    before = await table_counts(suite.dsn)
    for other in (
        pb.RegisterMemberRequest(request_id="k1", phone="13900139000"),
        pb.RegisterMemberRequest(request_id="k1", phone=PHONE, email="d@example.com"),
        pb.RegisterMemberRequest(request_id="k1", phone=PHONE, display_name="Dee"),
    ):
        await expect_error(
            suite.accounts.RegisterMember(other, metadata=suite.auth("wallet-backend")),
            EXISTS,
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    assert await table_counts(suite.dsn) == before


async def test_phone_is_unique_among_members(suite: Suite) -> None:
    await register(suite, PHONE, request_id="p1")
    before = await table_counts(suite.dsn)
    err = await expect_error(
        register(suite, PHONE, email="other@example.com", request_id="p2"),
        EXISTS,
        reason="PHONE_TAKEN",
    )
    assert err.domain == "accounts.membership"
    assert await table_counts(suite.dsn) == before


async def test_concurrent_repeats_of_one_registration_return_one_member(suite: Suite) -> None:
    request = pb.RegisterMemberRequest(request_id="race", phone=PHONE, email="race@example.com")
    wallet = suite.auth("wallet-backend")
    results = await asyncio.gather(
        *(suite.accounts.RegisterMember(request, metadata=wallet) for _ in range(4))
    )
    assert {m.member_id for m in results} == {results[0].member_id}
    assert (await table_counts(suite.dsn))["members"] == 1


async def test_referral_code_records_the_referrer(suite: Suite) -> None:
    referrer = await register(suite, PHONE)
    referred = await register(suite, referral_code=referrer.referral_code)
    assert referred.referred_by == referrer.name
    assert referred.referral_code != referrer.referral_code
    # codes are matched case-insensitively, surrounding blanks ignored
    lower = await register(suite, referral_code=f" {referrer.referral_code.lower()} ")
    assert lower.referred_by == referrer.name
    rows = await fetch(
        suite.dsn,
        "SELECT payload FROM accounts.outbox WHERE member_id = $1 AND event_type = $2",
        referred.member_id,
        "member.registered",
    )
    assert [json.loads(r["payload"])["referred_by"] for r in rows] == [referrer.member_id]


async def test_unknown_referral_code_is_invalid_and_writes_nothing(suite: Suite) -> None:
    await register(suite, PHONE)
    before = await table_counts(suite.dsn)
    for code in ("ZZZZZZZZ", "not-a-code"):
        await expect_error(register(suite, referral_code=code), INVALID, fields={"referral_code"})
    assert await table_counts(suite.dsn) == before


async def test_every_member_gets_a_distinct_referral_code(suite: Suite) -> None:
    members = [await register(suite) for _ in range(8)]
    codes = [m.referral_code for m in members]
    assert all(REFERRAL_CODE.match(c) for c in codes), codes
    assert len(set(codes)) == len(codes)
    stored = await fetch(suite.dsn, "SELECT code, member_id FROM accounts.referral_codes")
    assert {r["code"]: r["member_id"] for r in stored} == {
        m.referral_code: m.member_id for m in members
    }


BAD_REGISTRATIONS: list[tuple[dict[str, str], set[str]]] = [
    ({"phone": ""}, {"phone"}),
    ({"phone": "   "}, {"phone"}),
    ({"phone": "call-me-maybe"}, {"phone"}),
    ({"phone": "1380013800"}, {"phone"}),
    ({"phone": "010 6552 9988"}, {"phone"}),  # mainland landline
    ({"phone": "+86 10 6552 9988"}, {"phone"}),
    ({"phone": "1" * 40}, {"phone"}),
    ({"email": "not-an-email"}, {"email"}),
    ({"email": "a@b"}, {"email"}),
    ({"display_name": "x" * 65}, {"display_name"}),
    ({"display_name": "bad\x00name"}, {"display_name"}),
    ({"request_id": ""}, {"request_id"}),
    ({"request_id": "r" * 129}, {"request_id"}),
    ({"request_id": "tab\there"}, {"request_id"}),
    ({"referral_code": "no such code!"}, {"referral_code"}),
    (
        {"request_id": "", "phone": "", "email": "@", "display_name": "y" * 100},
        {"request_id", "phone", "email", "display_name"},
    ),
]


async def test_bad_input_is_invalid_argument_naming_the_fields(suite: Suite) -> None:
    wallet = suite.auth("wallet-backend")
    before = await table_counts(suite.dsn)
    for changes, fields in BAD_REGISTRATIONS:
        values: dict[str, Any] = {"request_id": "bad-1", "phone": PHONE, **changes}
        err = await rpc_error(
            suite.accounts.RegisterMember(pb.RegisterMemberRequest(**values), metadata=wallet)
        )
        assert err.code == INVALID, (changes, err.describe())
        assert err.fields == fields, (changes, err.describe())
        assert err.reason == "INVALID_ARGUMENT"
        assert all(description for _, description in err.violations)
        for value in changes.values():
            if len(value) > 3:
                assert value not in err.message
                assert all(value not in d for _, d in err.violations)
    assert await table_counts(suite.dsn) == before
    assert before["members"] == 0


async def test_limits_are_inclusive(suite: Suite) -> None:
    member = await register(suite, display_name="名" * 64, request_id="r" * 128)
    assert member.display_name == "名****"
    assert (await _full(suite, member.name)).display_name == "名" * 64


def privacy_calls() -> dict[str, float]:
    """Field-crypto RPCs privacy has answered so far in this process, by method."""
    calls = {"EncryptFields": 0.0, "ComputeBlindIndex": 0.0}
    for family in REGISTRY.collect():
        for sample in family.samples:
            method = sample.labels.get("method", "")
            name = method.rsplit("/", 1)[-1]
            if sample.name == "membership_rpc_total" and name in calls:
                calls[name] += sample.value
    return calls


async def test_a_new_registration_is_one_call_of_privacy(suite: Suite) -> None:
    before = privacy_calls()
    phone = "+8613800138123"
    member = await register(suite, phone, request_id="one-hop", email="one.hop@example.com")
    after = privacy_calls()
    assert {k: after[k] - before[k] for k in after} == {"EncryptFields": 1, "ComputeBlindIndex": 0}
    # the repeat compares its fingerprint first, and encrypts nothing
    again = await register(suite, phone, request_id="one-hop", email="one.hop@example.com")
    repeated = privacy_calls()
    assert again.name == member.name
    assert {k: repeated[k] - after[k] for k in after} == {
        "EncryptFields": 0,
        "ComputeBlindIndex": 1,
    }


class _FakePrivacy:
    """Deterministic digests and ciphertexts: enough to drive Registrations without privacy."""

    async def blind_indexes(self, inputs: Sequence[tuple[str, bytes]]) -> list[bytes]:
        return [hashlib.sha256(c.encode() + b"\0" + v).digest() for c, v in inputs]

    async def encrypt(self, member_id: str, fields: Sequence[tuple[str, bytes]]) -> list[bytes]:
        return [b"ct:" + c.encode() for c, _ in fields]

    async def encrypt_and_index(
        self,
        member_id: str,
        fields: Sequence[tuple[str, bytes]],
        inputs: Sequence[tuple[str, bytes]],
    ) -> tuple[list[bytes], list[bytes]]:
        return await self.encrypt(member_id, fields), await self.blind_indexes(inputs)

    async def decrypt(
        self, member_id: str, fields: Sequence[tuple[str, bytes]], purpose: str, on_behalf_of: str
    ) -> list[bytes]:
        raise AssertionError("not used")

    async def record_consents(
        self, member_id: str, grants: Sequence[ConsentGrant], channel: Channel, request_id: str
    ) -> None:
        raise AssertionError("not used")


async def test_request_id_clash_without_a_record_is_a_domain_error(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request_id was taken, yet no registration answers for it: an explicit error,
    not an assert (which `python -O` would strip, answering REQUEST_ID_TAKEN instead)."""

    async def clash(*args: object, **kwargs: object) -> None:
        raise UniqueViolation("request_id")

    monkeypatch.setattr(store, "insert_registration", clash)
    pool = await create_pool(database, 1, 2)
    try:
        registrations = Registrations(pool, _FakePrivacy())
        with pytest.raises(DomainError) as caught:
            await registrations.register(Registration("r1", "+8613800138000", "", "", ""))
        assert caught.value.code is Code.INTERNAL
        assert await pool.fetchval("SELECT count(*) FROM accounts.members") == 0
    finally:
        await pool.close()
