"""ExportMemberData and EraseMemberData: the internal RPCs for the privacy service."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2
from membership.accounts.v1 import accounts_pb2 as pb

from tests.support.accounts import ACCOUNTS_TABLES, fetch, fetchval, register, table_counts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

PHONE = "13800138000"
E164 = "+8613800138000"
EMAIL = "alice@example.com"
NAME = "Alice Wang"
PRIVACY_SUBJECT = "dsr:access-0042"

INVALID = grpc.StatusCode.INVALID_ARGUMENT
DENIED = grpc.StatusCode.PERMISSION_DENIED
NOT_FOUND = grpc.StatusCode.NOT_FOUND
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def _alice(suite: Suite) -> pb.Member:
    return await register(suite, PHONE, email=EMAIL, display_name=NAME, request_id="alice")


async def _export(
    suite: Suite, name: str, purpose: str = "access request 42"
) -> pb.ExportMemberDataResponse:
    export: pb.ExportMemberDataResponse = await suite.accounts.ExportMemberData(
        pb.ExportMemberDataRequest(name=name, purpose=purpose),
        metadata=suite.auth("service:privacy", subject=PRIVACY_SUBJECT),
    )
    return export


async def _erase(
    suite: Suite, name: str, request_id: str = "e1", reason: str = "deletion request 7"
) -> pb.EraseMemberDataResponse:
    erased: pb.EraseMemberDataResponse = await suite.accounts.EraseMemberData(
        pb.EraseMemberDataRequest(name=name, request_id=request_id, reason=reason),
        metadata=suite.auth("service:privacy", subject=PRIVACY_SUBJECT),
    )
    return erased


async def _lookup_code(suite: Suite, **key: str) -> grpc.StatusCode:
    try:
        await suite.accounts.LookupMember(
            pb.LookupMemberRequest(**key), metadata=suite.auth("wallet-backend")
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


# --- ExportMemberData ------------------------------------------------------------------


async def test_export_has_clear_values_history_and_referrals(suite: Suite) -> None:
    alice = await _alice(suite)
    referred = [await register(suite, referral_code=alice.referral_code) for _ in range(2)]
    await register(suite)  # not referred by Alice
    admin = suite.auth("admin", subject="admin:risk")
    await suite.accounts.FreezeMember(
        pb.FreezeMemberRequest(name=alice.name, request_id="f1", reason="risk check"),
        metadata=admin,
    )
    await suite.accounts.UnfreezeMember(
        pb.UnfreezeMemberRequest(name=alice.name, request_id="u1", reason="cleared"),
        metadata=admin,
    )
    export = await _export(suite, alice.name)
    m = export.member
    assert m.view == pb.MEMBER_VIEW_FULL
    assert (m.name, m.phone, m.email, m.display_name) == (alice.name, E164, EMAIL, NAME)
    assert m.status == pb.MEMBER_STATUS_ACTIVE
    assert m.referral_code == alice.referral_code
    assert [(c.from_status, c.to_status, c.reason, c.actor) for c in export.status_history] == [
        (pb.MEMBER_STATUS_ACTIVE, pb.MEMBER_STATUS_FROZEN, "risk check", "admin:risk"),
        (pb.MEMBER_STATUS_FROZEN, pb.MEMBER_STATUS_ACTIVE, "cleared", "admin:risk"),
    ]
    times = [c.change_time.ToDatetime() for c in export.status_history]
    assert times == sorted(times)
    assert times[0] >= alice.create_time.ToDatetime()
    assert list(export.referred_members) == [r.name for r in referred]
    # a referred member's export names the referrer
    assert (await _export(suite, referred[0].name)).member.referred_by == alice.name
    # reading in clear is audited, on behalf of the privacy service's caller
    rows = await fetch(
        suite.dsn,
        "SELECT actor_role, on_behalf_of, subject_id, purpose FROM privacy.audit_log"
        " WHERE subject_id = $1",
        alice.member_id,
    )
    assert [tuple(r) for r in rows] == [
        ("service:accounts", PRIVACY_SUBJECT, alice.member_id, "access request 42")
    ]


async def test_export_is_only_for_the_privacy_service(suite: Suite) -> None:
    alice = await _alice(suite)
    request = pb.ExportMemberDataRequest(name=alice.name, purpose="curious")
    for role in ("wallet-backend", "settlement", "officer", "admin", "service:accounts"):
        await expect_error(
            suite.accounts.ExportMemberData(request, metadata=suite.auth(role)), DENIED
        )
    assert await fetchval(suite.dsn, "SELECT count(*) FROM privacy.audit_log") == 0


async def test_export_bad_input_and_unknown_member(suite: Suite) -> None:
    alice = await _alice(suite)
    for name, purpose, fields in (
        (alice.name, "", {"purpose"}),
        (alice.name, "  ", {"purpose"}),
        (alice.name, "p" * 201, {"purpose"}),
        (alice.name, "bad\x00purpose", {"purpose"}),
        ("", "access", {"name"}),
        ("members/a b", "access", {"name"}),
    ):
        await expect_error(_export(suite, name, purpose), INVALID, fields=fields)
    await expect_error(_export(suite, "members/mnosuchmember"), NOT_FOUND)


# --- EraseMemberData -------------------------------------------------------------------


async def test_erase_removes_personal_information_and_indexes(suite: Suite) -> None:
    referrer = await register(suite, "13700137000")
    alice = await register(
        suite, PHONE, email=EMAIL, display_name=NAME, referral_code=referrer.referral_code
    )
    await suite.accounts.UpdateMember(
        pb.UpdateMemberRequest(
            member=pb.Member(name=alice.name, display_name=NAME),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            request_id="u1",
        ),
        metadata=suite.auth("wallet-backend"),
    )
    erased = await _erase(suite, alice.name)
    assert erased.removed_index_entries == 2  # phone and email
    m = erased.member
    assert m.status == pb.MEMBER_STATUS_ERASED
    assert (m.phone, m.email, m.display_name, m.referral_code) == ("", "", "", "")
    assert m.member_id == alice.member_id
    # the row keeps no ciphertext, mask or code; no index entry, code or idempotency record
    row = await fetch(
        suite.dsn,
        "SELECT phone_ct, email_ct, display_name_ct, phone_masked, email_masked,"
        " display_name_masked, referral_code, status, erased_at"
        " FROM accounts.members WHERE member_id = $1",
        alice.member_id,
    )
    assert len(row) == 1
    assert row[0]["status"] == "ERASED"
    assert row[0]["erased_at"] is not None
    assert [row[0][c] for c in ("phone_ct", "email_ct", "display_name_ct")] == [None] * 3
    assert [row[0][c] for c in ("phone_masked", "email_masked", "display_name_masked")] == [""] * 3
    assert row[0]["referral_code"] == ""
    for table in ("member_lookup", "referral_codes"):
        left = await fetchval(
            suite.dsn,
            f"SELECT count(*) FROM accounts.{table} WHERE member_id = $1",
            alice.member_id,
        )
        assert left == 0, table
    # idempotency records: only the registration's tombstone and the erasure itself remain
    registrations = await fetch(
        suite.dsn,
        "SELECT request_hash, snapshot FROM accounts.registration_requests WHERE member_id = $1",
        alice.member_id,
    )
    assert [tuple(r) for r in registrations] == [(None, None)]
    requests = await fetch(
        suite.dsn,
        "SELECT request_id, method FROM accounts.member_requests WHERE member_id = $1",
        alice.member_id,
    )
    assert [tuple(r) for r in requests] == [("e1", "EraseMemberData")]
    # nothing in the accounts schema shows any of it, masked or not
    for table in ACCOUNTS_TABLES:
        text = await fetchval(
            suite.dsn, f"SELECT coalesce(string_agg(t::text, ' '), '') FROM accounts.{table} t"
        )
        for value in ("13800138000", "138****8000", EMAIL, "a***@example.com", NAME, "A****"):
            assert value not in text, (table, value)
    # the status history and the outbox record the erasure without personal information
    [(event,)] = await fetch(
        suite.dsn,
        "SELECT payload->>'to_status' FROM accounts.outbox"
        " WHERE member_id = $1 AND event_type = 'member.status_changed'",
        alice.member_id,
    )
    assert event == "ERASED"
    history = (await _export(suite, alice.name)).status_history
    assert [(c.to_status, c.reason, c.actor) for c in history] == [
        (pb.MEMBER_STATUS_ERASED, "deletion request 7", PRIVACY_SUBJECT)
    ]


async def test_erased_member_cannot_be_found_read_or_changed(suite: Suite) -> None:
    alice = await _alice(suite)
    await _erase(suite, alice.name)
    assert await _lookup_code(suite, phone=PHONE) == NOT_FOUND
    assert await _lookup_code(suite, email=EMAIL) == NOT_FOUND
    masked = await suite.accounts.GetMember(
        pb.GetMemberRequest(name=alice.name), metadata=suite.auth("officer")
    )
    assert masked.status == pb.MEMBER_STATUS_ERASED
    assert (masked.phone, masked.email, masked.display_name) == ("", "", "")
    await expect_error(
        suite.accounts.GetMember(
            pb.GetMemberRequest(name=alice.name, view=pb.MEMBER_VIEW_FULL, purpose="audit"),
            metadata=suite.auth("officer"),
        ),
        PRECONDITION,
        reason="MEMBER_ERASED",
    )
    export = await _export(suite, alice.name)
    assert export.member.status == pb.MEMBER_STATUS_ERASED
    assert (export.member.phone, export.member.email, export.member.display_name) == ("", "", "")
    admin = suite.auth("admin")
    await expect_error(
        suite.accounts.FreezeMember(
            pb.FreezeMemberRequest(name=alice.name, request_id="f1", reason="x"), metadata=admin
        ),
        PRECONDITION,
        reason="MEMBER_ERASED",
    )
    await expect_error(
        suite.accounts.CloseMember(
            pb.CloseMemberRequest(name=alice.name, request_id="c1", reason="x"), metadata=admin
        ),
        PRECONDITION,
        reason="MEMBER_ERASED",
    )
    await expect_error(
        suite.accounts.UpdateMember(
            pb.UpdateMemberRequest(
                member=pb.Member(name=alice.name, display_name="Back"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
                request_id="u1",
            ),
            metadata=admin,
        ),
        PRECONDITION,
        reason="MEMBER_ERASED",
    )
    # the erased member's referral code no longer refers anyone
    await expect_error(
        register(suite, referral_code=alice.referral_code), INVALID, fields={"referral_code"}
    )


async def test_phone_and_email_can_register_again_after_erasure(suite: Suite) -> None:
    alice = await _alice(suite)
    await _erase(suite, alice.name)
    again = await register(suite, PHONE, email=EMAIL, display_name=NAME, request_id="alice-2")
    assert again.member_id != alice.member_id
    assert again.status == pb.MEMBER_STATUS_ACTIVE
    found = await suite.accounts.LookupMember(
        pb.LookupMemberRequest(phone=PHONE), metadata=suite.auth("wallet-backend")
    )
    assert found.member_id == again.member_id
    full = await suite.accounts.GetMember(
        pb.GetMemberRequest(name=again.name, view=pb.MEMBER_VIEW_FULL, purpose="check"),
        metadata=suite.auth("officer"),
    )
    assert (full.phone, full.email, full.display_name) == (E164, EMAIL, NAME)


async def test_repeated_erasure_is_harmless(suite: Suite) -> None:
    alice = await _alice(suite)
    bob = await register(suite, "13900139000")
    first = await _erase(suite, alice.name, "e1")
    assert first.removed_index_entries == 2
    # a repeat of the same request answers like the first time; another request finds
    # nothing left to remove
    for request_id, removed in (("e1", 2), ("e2", 0), ("e1", 2), ("e2", 0)):
        again = await _erase(suite, alice.name, request_id)
        assert again.member.status == pb.MEMBER_STATUS_ERASED
        assert again.removed_index_entries == removed
        assert again.member.member_id == first.member.member_id
    history = await fetchval(
        suite.dsn,
        "SELECT count(*) FROM accounts.member_status_changes WHERE member_id = $1",
        alice.member_id,
    )
    assert history == 1
    # other members are untouched
    assert await _lookup_code(suite, phone="13900139000") == grpc.StatusCode.OK
    assert (
        await fetchval(
            suite.dsn,
            "SELECT count(*) FROM accounts.member_lookup WHERE member_id = $1",
            bob.member_id,
        )
        == 1
    )


async def test_frozen_and_closed_members_can_be_erased(suite: Suite) -> None:
    frozen, closed = await register(suite), await register(suite)
    admin = suite.auth("admin")
    await suite.accounts.FreezeMember(
        pb.FreezeMemberRequest(name=frozen.name, request_id="f", reason="x"), metadata=admin
    )
    await suite.accounts.CloseMember(
        pb.CloseMemberRequest(name=closed.name, request_id="c", reason="x"), metadata=admin
    )
    for member in (frozen, closed):
        erased = await _erase(suite, member.name)
        assert erased.member.status == pb.MEMBER_STATUS_ERASED
        assert erased.removed_index_entries == 1  # phone only


async def test_erase_is_only_for_the_privacy_service_and_validates(suite: Suite) -> None:
    alice = await _alice(suite)
    request = pb.EraseMemberDataRequest(name=alice.name, request_id="e1", reason="x")
    for role in ("wallet-backend", "settlement", "officer", "admin", "service:accounts"):
        await expect_error(
            suite.accounts.EraseMemberData(request, metadata=suite.auth(role)), DENIED
        )
    for name, request_id, reason, fields in (
        (alice.name, "", "x", {"request_id"}),
        (alice.name, "e" * 129, "x", {"request_id"}),
        (alice.name, "e1", "", {"reason"}),
        (alice.name, "e1", "r" * 201, {"reason"}),
        ("members/", "e1", "x", {"name"}),
    ):
        await expect_error(_erase(suite, name, request_id, reason), INVALID, fields=fields)
    await expect_error(_erase(suite, "members/mnosuchmember"), NOT_FOUND)
    assert await _lookup_code(suite, phone=PHONE) == grpc.StatusCode.OK, "still there"


async def test_erasure_repeat_with_another_reason_is_key_reuse(suite: Suite) -> None:
    alice = await _alice(suite)
    first = await _erase(suite, alice.name, "e1", "deletion request 7")
    await expect_error(
        _erase(suite, alice.name, "e1", "deletion request 8"),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )
    again = await _erase(suite, alice.name, "e1", "deletion request 7")
    assert again == first
    assert again.removed_index_entries == 2
    # the record of the erasure holds nothing personal: its snapshot is the empty member
    [(method, snapshot)] = await fetch(
        suite.dsn,
        "SELECT method, snapshot::text FROM accounts.member_requests"
        " WHERE member_id = $1 AND request_id = 'e1'",
        alice.member_id,
    )
    assert method == "EraseMemberData"
    for value in ("13800138000", "138****8000", "alice", "a***", "Alice", "A****"):
        assert value not in snapshot


async def test_erasure_request_id_is_checked_against_earlier_requests(suite: Suite) -> None:
    """A request_id already used by another mutation of the member is not an erasure."""
    alice = await _alice(suite)
    await suite.accounts.FreezeMember(
        pb.FreezeMemberRequest(name=alice.name, request_id="k1", reason="risk"),
        metadata=suite.auth("admin"),
    )
    await expect_error(
        _erase(suite, alice.name, "k1"),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )
    assert (await _erase(suite, alice.name, "e1")).member.status == pb.MEMBER_STATUS_ERASED


async def test_retried_registration_of_an_erased_member_is_refused(suite: Suite) -> None:
    """The registration's idempotency record survives erasure as a tombstone: a retry of
    it must not bring the erased person's phone back as a new account."""
    alice = await _alice(suite)
    await _erase(suite, alice.name)
    before = await table_counts(suite.dsn)
    for phone, email, name in ((PHONE, EMAIL, NAME), (PHONE, "", ""), ("13900139000", "", "")):
        await expect_error(
            register(suite, phone, email=email, display_name=name, request_id="alice"),
            PRECONDITION,
            reason="MEMBER_ERASED",
        )
    assert await table_counts(suite.dsn) == before
    assert await _lookup_code(suite, phone=PHONE) == NOT_FOUND
