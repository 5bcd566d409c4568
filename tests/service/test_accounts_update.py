"""UpdateMember: field masks, uniqueness of phone and email, idempotency, closed members."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc
from google.protobuf import field_mask_pb2
from membership.accounts.v1 import accounts_pb2 as pb

from tests.support.accounts import fetchval, register, table_counts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

PHONE = "13800138000"
E164 = "+8613800138000"
OTHER_PHONE = "13900139000"
EMAIL = "alice@example.com"

INVALID = grpc.StatusCode.INVALID_ARGUMENT
EXISTS = grpc.StatusCode.ALREADY_EXISTS
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _update(
    name: str,
    request_id: str,
    paths: list[str],
    *,
    phone: str = "",
    email: str = "",
    display_name: str = "",
) -> pb.UpdateMemberRequest:
    return pb.UpdateMemberRequest(
        member=pb.Member(name=name, phone=phone, email=email, display_name=display_name),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        request_id=request_id,
    )


async def _call(suite: Suite, request: pb.UpdateMemberRequest) -> pb.Member:
    member: pb.Member = await suite.accounts.UpdateMember(
        request, metadata=suite.auth("wallet-backend")
    )
    return member


async def _full(suite: Suite, name: str) -> tuple[str, str, str]:
    m = await suite.accounts.GetMember(
        pb.GetMemberRequest(name=name, view=pb.MEMBER_VIEW_FULL, purpose="test"),
        metadata=suite.auth("officer"),
    )
    return m.phone, m.email, m.display_name


async def _lookup(suite: Suite, **key: str) -> str:
    """member_id found through the blind index, or "" when NOT_FOUND."""
    try:
        found = await suite.accounts.LookupMember(
            pb.LookupMemberRequest(**key), metadata=suite.auth("wallet-backend")
        )
    except grpc.aio.AioRpcError as err:
        assert err.code() == NOT_FOUND, err
        return ""
    return str(found.member_id)


async def _alice(suite: Suite) -> pb.Member:
    return await register(suite, PHONE, email=EMAIL, display_name="Alice")


async def test_update_display_name_only(suite: Suite) -> None:
    alice = await _alice(suite)
    updated = await _call(
        suite, _update(alice.name, "u1", ["display_name"], display_name=" 爱丽丝 ", email="x@y.cn")
    )
    assert updated.view == pb.MEMBER_VIEW_MASKED
    assert updated.display_name == "爱**"
    assert updated.email == "a***@example.com", "fields outside the mask do not change"
    assert updated.member_id == alice.member_id
    assert updated.referral_code == alice.referral_code
    assert updated.update_time.ToDatetime() > alice.update_time.ToDatetime()
    assert updated.create_time == alice.create_time
    assert await _full(suite, alice.name) == (E164, EMAIL, "爱丽丝")


async def test_update_email_moves_the_lookup(suite: Suite) -> None:
    alice = await _alice(suite)
    updated = await _call(
        suite, _update(alice.name, "u1", ["email"], email="Alice.New@Example.com")
    )
    assert updated.email == "a***@example.com"
    assert await _full(suite, alice.name) == (E164, "alice.new@example.com", "Alice")
    assert await _lookup(suite, email="alice.new@example.com") == alice.member_id
    assert await _lookup(suite, email=EMAIL) == ""
    # the old address is free for someone else
    other = await register(suite, OTHER_PHONE, email=EMAIL)
    assert await _lookup(suite, email=EMAIL) == other.member_id


async def test_clearing_the_email_frees_it(suite: Suite) -> None:
    alice = await _alice(suite)
    bob = await register(suite, OTHER_PHONE)
    await expect_error(
        _call(suite, _update(bob.name, "b1", ["email"], email=EMAIL)), EXISTS, reason="EMAIL_TAKEN"
    )
    cleared = await _call(suite, _update(alice.name, "u1", ["email"]))
    assert cleared.email == ""
    assert await _full(suite, alice.name) == (E164, "", "Alice")
    assert await _lookup(suite, email=EMAIL) == ""
    taken = await _call(suite, _update(bob.name, "b2", ["email"], email=EMAIL))
    assert taken.email == "a***@example.com"
    assert await _lookup(suite, email=EMAIL) == bob.member_id


async def test_clearing_the_display_name(suite: Suite) -> None:
    alice = await _alice(suite)
    cleared = await _call(suite, _update(alice.name, "u1", ["display_name"]))
    assert cleared.display_name == ""
    assert await _full(suite, alice.name) == (E164, EMAIL, "")


async def test_update_phone_rechecks_uniqueness(suite: Suite) -> None:
    alice = await _alice(suite)
    bob = await register(suite, OTHER_PHONE, email="bob@example.com")
    before = await table_counts(suite.dsn)
    for request in (
        _update(alice.name, "u1", ["phone"], phone="+86 139 0013 9000"),
        _update(alice.name, "u2", ["phone", "email"], phone=OTHER_PHONE, email="new@example.com"),
        _update(alice.name, "u3", ["email", "display_name"], email="BOB@example.com"),
    ):
        reason = "EMAIL_TAKEN" if request.update_mask.paths[0] == "email" else "PHONE_TAKEN"
        await expect_error(_call(suite, request), EXISTS, reason=reason)
    # nothing changed: neither the member nor the index nor the idempotency records
    assert await table_counts(suite.dsn) == before
    assert await _full(suite, alice.name) == (E164, EMAIL, "Alice")
    assert await _lookup(suite, phone=PHONE) == alice.member_id
    assert await _lookup(suite, phone=OTHER_PHONE) == bob.member_id
    assert await _lookup(suite, email="new@example.com") == ""
    # a free number is taken over, and the old one is released
    moved = await _call(suite, _update(alice.name, "u4", ["phone"], phone="+86 137 0013 7000"))
    assert moved.phone == "137****7000"
    assert await _full(suite, alice.name) == ("+8613700137000", EMAIL, "Alice")
    assert await _lookup(suite, phone="13700137000") == alice.member_id
    assert await _lookup(suite, phone=PHONE) == ""
    carol = await register(suite, PHONE)
    assert await _lookup(suite, phone=PHONE) == carol.member_id


async def test_setting_ones_own_phone_again_is_fine(suite: Suite) -> None:
    alice = await _alice(suite)
    same = await _call(suite, _update(alice.name, "u1", ["phone"], phone="+86 138 0013 8000"))
    assert same.phone == "138****8000"
    assert await _lookup(suite, phone=PHONE) == alice.member_id


async def test_bad_masks_and_values_are_invalid(suite: Suite) -> None:
    alice = await _alice(suite)
    before = await table_counts(suite.dsn)
    cases: list[tuple[pb.UpdateMemberRequest, set[str]]] = [
        (_update(alice.name, "u1", []), {"update_mask"}),
        (_update(alice.name, "u1", ["status"]), {"update_mask"}),
        (_update(alice.name, "u1", ["referral_code"], display_name="x"), {"update_mask"}),
        (_update(alice.name, "u1", ["display_name", "name"], display_name="x"), {"update_mask"}),
        (_update(alice.name, "u1", ["member.display_name"], display_name="x"), {"update_mask"}),
        (_update(alice.name, "u1", ["*"], display_name="x"), {"update_mask"}),
        (_update(alice.name, "u1", ["phone"]), {"member.phone"}),
        (_update(alice.name, "u1", ["phone"], phone="010 6552 9988"), {"member.phone"}),
        (_update(alice.name, "u1", ["email"], email="not-an-email"), {"member.email"}),
        (
            _update(alice.name, "u1", ["display_name"], display_name="n" * 65),
            {"member.display_name"},
        ),
        (_update(alice.name, "", ["display_name"], display_name="x"), {"request_id"}),
        (_update(alice.name, "r" * 129, ["display_name"], display_name="x"), {"request_id"}),
        (_update("", "u1", ["display_name"], display_name="x"), {"member.name"}),
        (_update("members/x-y", "u1", ["display_name"], display_name="x"), {"member.name"}),
    ]
    for request, fields in cases:
        await expect_error(_call(suite, request), INVALID, fields=fields)
    assert await table_counts(suite.dsn) == before
    assert await _full(suite, alice.name) == (E164, EMAIL, "Alice")


async def test_unknown_member_is_not_found(suite: Suite) -> None:
    await expect_error(
        _call(suite, _update("members/mnosuchmember", "u1", ["display_name"], display_name="x")),
        NOT_FOUND,
    )


async def test_repeat_returns_the_first_result(suite: Suite) -> None:
    alice = await _alice(suite)
    first = await _call(suite, _update(alice.name, "u1", ["display_name"], display_name="Anna"))
    await _call(suite, _update(alice.name, "u2", ["display_name"], display_name="Zoe"))
    again = await _call(suite, _update(alice.name, "u1", ["display_name"], display_name="Anna"))
    assert again == first
    assert again.display_name == "A***"
    assert await _full(suite, alice.name) == (E164, EMAIL, "Zoe"), "the repeat changed nothing"
    counts = await table_counts(suite.dsn)
    assert counts["member_requests"] == 2


async def test_key_reuse_with_another_payload_is_rejected(suite: Suite) -> None:
    alice = await _alice(suite)
    await _call(suite, _update(alice.name, "u1", ["display_name"], display_name="Anna"))
    before = await table_counts(suite.dsn)
    for request in (
        _update(alice.name, "u1", ["display_name"], display_name="Other"),
        _update(alice.name, "u1", ["email"], email="anna@example.com"),
        _update(alice.name, "u1", ["display_name", "email"], display_name="Anna"),
    ):
        await expect_error(_call(suite, request), EXISTS, reason="IDEMPOTENCY_KEY_REUSED")
    # a key used by another method on the same member is taken too
    await suite.accounts.FreezeMember(
        pb.FreezeMemberRequest(name=alice.name, request_id="k-freeze", reason="risk"),
        metadata=suite.auth("admin"),
    )
    await expect_error(
        _call(suite, _update(alice.name, "k-freeze", ["display_name"], display_name="Anna")),
        EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )
    after = await table_counts(suite.dsn)
    assert after["member_requests"] == before["member_requests"] + 1  # only the freeze
    assert await _full(suite, alice.name) == (E164, EMAIL, "Anna")


async def test_concurrent_repeats_apply_once(suite: Suite) -> None:
    alice = await _alice(suite)
    request = _update(alice.name, "u1", ["display_name", "email"], display_name="Al", email="")
    results = await asyncio.gather(*(_call(suite, request) for _ in range(4)))
    assert all(r == results[0] for r in results)
    assert (await table_counts(suite.dsn))["member_requests"] == 1


async def test_closed_member_cannot_be_updated(suite: Suite) -> None:
    alice = await _alice(suite)
    await suite.accounts.CloseMember(
        pb.CloseMemberRequest(name=alice.name, request_id="c1", reason="member asked"),
        metadata=suite.auth("wallet-backend"),
    )
    before = await table_counts(suite.dsn)
    for request in (
        _update(alice.name, "u1", ["display_name"], display_name="Ghost"),
        _update(alice.name, "u2", ["phone"], phone=OTHER_PHONE),
    ):
        await expect_error(
            _call(suite, request), grpc.StatusCode.FAILED_PRECONDITION, reason="MEMBER_CLOSED"
        )
    assert await table_counts(suite.dsn) == before
    assert await _full(suite, alice.name) == (E164, EMAIL, "Alice")


async def _code_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_concurrent_swaps_of_phones_never_fail_internally(suite: Suite) -> None:
    """Two members trading phones (and emails) at the same moment wait on each other's
    index entries: a deadlock is retried, and what is left is a clash or ABORTED."""
    alice = await register(suite, PHONE, email=EMAIL)
    bob = await register(suite, OTHER_PHONE, email="bob@example.com")
    contacts = {alice.name: (PHONE, EMAIL), bob.name: (OTHER_PHONE, "bob@example.com")}
    codes: Counter[grpc.StatusCode] = Counter()
    for i in range(20):
        paths = ["phone"] if i % 2 == 0 else ["email", "phone"]
        calls = [
            _call(suite, _update(me.name, f"swap-{i}", paths, phone=phone, email=email))
            for me, (phone, email) in ((alice, contacts[bob.name]), (bob, contacts[alice.name]))
        ]
        codes.update(await asyncio.gather(*(_code_of(c) for c in calls)))
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED}
    assert set(codes) <= allowed, codes
    # whatever happened, the index still finds each member by the phone they hold
    for member in (alice, bob):
        phone, email, _ = await _full(suite, member.name)
        assert await _lookup(suite, phone=phone) == member.member_id
        assert await _lookup(suite, email=email) == member.member_id


def _validate(request: pb.UpdateMemberRequest) -> pb.UpdateMemberRequest:
    request.validate_only = True
    return request


async def _audit_rows(suite: Suite) -> int:
    return int(await fetchval(suite.dsn, "SELECT count(*) FROM privacy.audit_log"))


async def test_validate_only_checks_like_an_update_and_changes_nothing(suite: Suite) -> None:
    """AIP-163: what privacy asks before it accepts a correction request."""
    alice = await _alice(suite)
    await register(suite, OTHER_PHONE)
    before, audited = await table_counts(suite.dsn), await _audit_rows(suite)
    refusals: list[tuple[pb.UpdateMemberRequest, grpc.StatusCode, str, set[str] | None]] = [
        (
            _update(alice.name, "v1", ["phone"], phone="12"),
            INVALID,
            "INVALID_ARGUMENT",
            {"member.phone"},
        ),
        (
            _update(alice.name, "v1", ["email"], email="nope"),
            INVALID,
            "INVALID_ARGUMENT",
            {"member.email"},
        ),
        (
            _update(alice.name, "", ["display_name"], display_name="x"),
            INVALID,
            "INVALID_ARGUMENT",
            {"request_id"},
        ),
        (_update(alice.name, "v1", ["phone"], phone=OTHER_PHONE), EXISTS, "PHONE_TAKEN", None),
        (
            _update("members/mnosuchmember", "v1", ["display_name"], display_name="x"),
            NOT_FOUND,
            "NOT_FOUND",
            None,
        ),
    ]
    for request, code, reason, fields in refusals:
        await expect_error(_call(suite, _validate(request)), code, reason=reason, fields=fields)

    preview = await _call(
        suite, _validate(_update(alice.name, "v1", ["display_name"], display_name="Anna"))
    )
    assert (preview.display_name, preview.email) == ("A***", "a***@example.com")
    assert preview.update_time == alice.update_time
    own = await _call(suite, _validate(_update(alice.name, "v2", ["phone"], phone=PHONE)))
    assert own.phone == "138****8000"  # one's own number is not taken
    # nothing written, no key recorded, nothing encrypted or read in clear
    assert await table_counts(suite.dsn) == before
    assert await _audit_rows(suite) == audited
    assert await _full(suite, alice.name) == (E164, EMAIL, "Alice")
    # the key is still free: the update itself runs
    updated = await _call(suite, _update(alice.name, "v1", ["display_name"], display_name="Anna"))
    assert updated.display_name == "A***" and updated.update_time != alice.update_time


async def test_validate_only_refuses_a_closed_member(suite: Suite) -> None:
    alice = await _alice(suite)
    await suite.accounts.CloseMember(
        pb.CloseMemberRequest(name=alice.name, request_id="c1", reason="member asked"),
        metadata=suite.auth("wallet-backend"),
    )
    request = _validate(_update(alice.name, "v1", ["display_name"], display_name="Ghost"))
    await expect_error(
        _call(suite, request), grpc.StatusCode.FAILED_PRECONDITION, reason="MEMBER_CLOSED"
    )
