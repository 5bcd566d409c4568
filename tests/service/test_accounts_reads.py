"""GetMember (masked and FULL views, audit), LookupMember and ListMembers."""

from __future__ import annotations

from typing import Any

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from services.runtime import paging
from tests.support.accounts import fetch, fetchval, register
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

PHONE = "13800138000"
E164 = "+8613800138000"
EMAIL = "alice@example.com"
NAME = "王小明"

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ALL_FIELDS = ["accounts.members.phone", "accounts.members.email", "accounts.members.display_name"]


async def _alice(suite: Suite) -> pb.Member:
    return await register(suite, PHONE, email="Alice@Example.com", display_name=NAME)


async def _audit_rows(suite: Suite) -> list[dict[str, Any]]:
    rows = await fetch(
        suite.dsn,
        "SELECT actor, actor_role, on_behalf_of, action, subject_id, fields, purpose"
        " FROM privacy.audit_log ORDER BY seq",
    )
    return [dict(r) for r in rows]


def _get(name: str, view: int = 0, purpose: str = "") -> pb.GetMemberRequest:
    return pb.GetMemberRequest(name=name, view=view, purpose=purpose)  # type: ignore[arg-type]


# --- GetMember -------------------------------------------------------------------------


async def test_get_member_is_masked_by_default_and_not_audited(suite: Suite) -> None:
    member = await _alice(suite)
    for role in ("wallet-backend", "officer", "admin", "service:privacy"):
        for view in (pb.MEMBER_VIEW_UNSPECIFIED, pb.MEMBER_VIEW_MASKED):
            got = await suite.accounts.GetMember(_get(member.name, view), metadata=suite.auth(role))
            assert got.view == pb.MEMBER_VIEW_MASKED
            assert (got.phone, got.email, got.display_name) == (
                "138****8000",
                "a***@example.com",
                "王**",
            )
            assert got.member_id == member.member_id
            assert got.referral_code == member.referral_code
    assert await _audit_rows(suite) == []


async def test_full_view_needs_a_purpose(suite: Suite) -> None:
    member = await _alice(suite)
    officer = suite.auth("officer")
    for purpose in ("", "   ", "p" * 201):
        await expect_error(
            suite.accounts.GetMember(
                _get(member.name, pb.MEMBER_VIEW_FULL, purpose), metadata=officer
            ),
            INVALID,
            fields={"purpose"},
        )
    assert await _audit_rows(suite) == []


async def test_full_view_needs_the_read_pii_scope(suite: Suite) -> None:
    member = await _alice(suite)
    err = await expect_error(
        suite.accounts.GetMember(
            _get(member.name, pb.MEMBER_VIEW_FULL, "support ticket 42"),
            metadata=suite.auth("wallet-backend"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert err.reason == "SCOPE_MISSING"
    assert await _audit_rows(suite) == []


async def test_full_view_without_the_scope_is_denied_before_the_purpose_is_checked(
    suite: Suite,
) -> None:
    """A caller that may never read in clear learns nothing about what it would need."""
    member = await _alice(suite)
    for purpose in ("", "   ", "p" * 201, "bad\x00purpose"):
        await expect_error(
            suite.accounts.GetMember(
                _get(member.name, pb.MEMBER_VIEW_FULL, purpose),
                metadata=suite.auth("wallet-backend"),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            reason="SCOPE_MISSING",
        )
    assert await _audit_rows(suite) == []


async def test_full_view_for_officer_and_admin_is_audited(suite: Suite) -> None:
    member = await _alice(suite)
    for role, subject in (("officer", "officer:li.na"), ("admin", "admin:ops")):
        got = await suite.accounts.GetMember(
            _get(member.name, pb.MEMBER_VIEW_FULL, f"complaint of {role}"),
            metadata=suite.auth(role, subject=subject),
        )
        assert got.view == pb.MEMBER_VIEW_FULL
        assert (got.phone, got.email, got.display_name) == (E164, EMAIL, NAME)
        assert got.member_id == member.member_id
    rows = await _audit_rows(suite)
    assert len(rows) == 2
    for row, (subject, purpose) in zip(
        rows,
        [("officer:li.na", "complaint of officer"), ("admin:ops", "complaint of admin")],
        strict=True,
    ):
        assert row["actor_role"] == "service:accounts"
        assert row["action"] == "fields.decrypt"
        assert row["on_behalf_of"] == subject
        assert row["subject_id"] == member.member_id
        assert row["purpose"] == purpose
        assert sorted(row["fields"]) == sorted(ALL_FIELDS)


async def test_full_view_audits_only_the_fields_present(suite: Suite) -> None:
    member = await register(suite, PHONE)
    got = await suite.accounts.GetMember(
        _get(member.name, pb.MEMBER_VIEW_FULL, "support"), metadata=suite.auth("officer")
    )
    assert (got.phone, got.email, got.display_name) == (E164, "", "")
    [row] = await _audit_rows(suite)
    assert row["fields"] == ["accounts.members.phone"]


async def test_get_member_bad_name_unknown_member_and_unknown_view(suite: Suite) -> None:
    member = await _alice(suite)
    officer = suite.auth("officer")
    for name in (
        "",
        "members/",
        member.member_id,
        f"member/{member.member_id}",
        f"members/{member.member_id}/x",
        "members/has-dash",
        "members/中文",
        "members/" + "a" * 33,
        f" {member.name}",
    ):
        await expect_error(
            suite.accounts.GetMember(_get(name), metadata=officer), INVALID, fields={"name"}
        )
    for view in (pb.MEMBER_VIEW_MASKED, pb.MEMBER_VIEW_FULL):
        await expect_error(
            suite.accounts.GetMember(_get("members/mnosuchmember", view, "x"), metadata=officer),
            grpc.StatusCode.NOT_FOUND,
        )
    for unknown_view in (3, 7, -1):
        await expect_error(
            suite.accounts.GetMember(_get(member.name, unknown_view), metadata=officer),
            INVALID,
            fields={"view"},
        )


async def test_purpose_with_control_characters_is_invalid(suite: Suite) -> None:
    member = await _alice(suite)
    await expect_error(
        suite.accounts.GetMember(
            _get(member.name, pb.MEMBER_VIEW_FULL, "support\x00ticket"),
            metadata=suite.auth("officer"),
        ),
        INVALID,
        fields={"purpose"},
    )
    assert await _audit_rows(suite) == []


# --- LookupMember ----------------------------------------------------------------------


async def test_lookup_by_phone_in_any_accepted_format(suite: Suite) -> None:
    member = await _alice(suite)
    await register(suite, "13900139000")  # another member, not to be found by Alice's keys
    for raw in (PHONE, E164, "+86 138 0013 8000", "8613800138000", "138-0013-8000"):
        found = await suite.accounts.LookupMember(
            pb.LookupMemberRequest(phone=raw), metadata=suite.auth("wallet-backend")
        )
        assert found.member_id == member.member_id
        assert found.view == pb.MEMBER_VIEW_MASKED
        assert found.phone == "138****8000"


async def test_lookup_by_email(suite: Suite) -> None:
    member = await _alice(suite)
    for raw in (EMAIL, "ALICE@example.COM", f"  {EMAIL} "):
        found = await suite.accounts.LookupMember(
            pb.LookupMemberRequest(email=raw), metadata=suite.auth("officer")
        )
        assert found.member_id == member.member_id
        assert found.email == "a***@example.com"


async def test_lookup_not_found_and_bad_input(suite: Suite) -> None:
    await _alice(suite)
    wallet = suite.auth("wallet-backend")
    for request in (
        pb.LookupMemberRequest(phone="13900139000"),
        pb.LookupMemberRequest(email="bob@example.com"),
    ):
        await expect_error(
            suite.accounts.LookupMember(request, metadata=wallet), grpc.StatusCode.NOT_FOUND
        )
    await expect_error(
        suite.accounts.LookupMember(pb.LookupMemberRequest(), metadata=wallet),
        INVALID,
        fields={"key"},
    )
    for request, field in (
        (pb.LookupMemberRequest(phone=""), "phone"),
        (pb.LookupMemberRequest(phone="010 6552 9988"), "phone"),
        (pb.LookupMemberRequest(phone="nonsense"), "phone"),
        (pb.LookupMemberRequest(email=""), "email"),
        (pb.LookupMemberRequest(email="not-an-email"), "email"),
    ):
        await expect_error(
            suite.accounts.LookupMember(request, metadata=wallet), INVALID, fields={field}
        )


async def test_lookup_table_holds_digests_not_values(suite: Suite) -> None:
    member = await _alice(suite)
    rows = await fetch(suite.dsn, "SELECT kind, digest, member_id FROM accounts.member_lookup")
    assert sorted(r["kind"] for r in rows) == ["email", "phone"]
    assert {r["member_id"] for r in rows} == {member.member_id}
    clear = [PHONE.encode(), E164.encode(), EMAIL.encode(), b"13800138000"]
    for row in rows:
        digest = bytes(row["digest"])
        assert len(digest) == 32  # HMAC-SHA256
        assert all(value not in digest for value in clear)
    assert rows[0]["digest"] != rows[1]["digest"]
    # nor does the member row hold any personal information in clear
    dump = await fetchval(
        suite.dsn,
        "SELECT row_to_json(m)::text FROM accounts.members m WHERE member_id = $1",
        member.member_id,
    )
    for value in ("13800138000", EMAIL, "alice", NAME):
        assert value not in dump


# --- ListMembers -----------------------------------------------------------------------


async def _list(
    suite: Suite, page_size: int = 0, page_token: str = "", status: int = 0
) -> pb.ListMembersResponse:
    response: pb.ListMembersResponse = await suite.accounts.ListMembers(
        pb.ListMembersRequest(page_size=page_size, page_token=page_token, status=status),  # type: ignore[arg-type]
        metadata=suite.auth("officer"),
    )
    return response


async def test_list_members_pages_through_all_in_registration_order(suite: Suite) -> None:
    registered = [await register(suite, f"1390013900{i}") for i in range(5)]
    pages: list[list[str]] = []
    token = ""
    while True:
        page = await _list(suite, page_size=2, page_token=token)
        pages.append([m.member_id for m in page.members])
        assert all(m.view == pb.MEMBER_VIEW_MASKED and "****" in m.phone for m in page.members)
        token = page.next_page_token
        if not token:
            break
        assert len(pages) < 10, "paging does not end"
    assert [len(p) for p in pages] == [2, 2, 1]
    listed = [m for p in pages for m in p]
    assert listed == [m.member_id for m in registered]
    # one page holds them all when it is big enough
    whole = await _list(suite)
    assert [m.member_id for m in whole.members] == listed
    assert whole.next_page_token == ""


async def test_list_members_is_for_officers_and_admins_only(suite: Suite) -> None:
    await register(suite, PHONE)
    for role in ("wallet-backend", "settlement", "service:privacy", "service:accounts"):
        await expect_error(
            suite.accounts.ListMembers(pb.ListMembersRequest(), metadata=suite.auth(role)),
            grpc.StatusCode.PERMISSION_DENIED,
            reason="SCOPE_MISSING",
        )
    for role in ("officer", "admin"):
        listed = await suite.accounts.ListMembers(
            pb.ListMembersRequest(), metadata=suite.auth(role)
        )
        assert len(listed.members) == 1


async def test_list_members_filters_by_status(suite: Suite) -> None:
    members = [await register(suite, f"1390013900{i}") for i in range(5)]
    admin = suite.auth("admin")
    for i, member in enumerate(members[1:4]):
        await suite.accounts.FreezeMember(
            pb.FreezeMemberRequest(name=member.name, request_id=f"f{i}", reason="risk"),
            metadata=admin,
        )
    await suite.accounts.CloseMember(
        pb.CloseMemberRequest(name=members[3].name, request_id="c", reason="member asked"),
        metadata=admin,
    )
    frozen, token = [], ""
    while True:
        page = await _list(suite, page_size=1, page_token=token, status=pb.MEMBER_STATUS_FROZEN)
        frozen += [m.member_id for m in page.members]
        assert all(m.status == pb.MEMBER_STATUS_FROZEN for m in page.members)
        token = page.next_page_token
        if not token:
            break
    assert frozen == [members[1].member_id, members[2].member_id]
    active = await _list(suite, status=pb.MEMBER_STATUS_ACTIVE)
    assert [m.member_id for m in active.members] == [members[0].member_id, members[4].member_id]
    closed = await _list(suite, status=pb.MEMBER_STATUS_CLOSED)
    assert [m.member_id for m in closed.members] == [members[3].member_id]
    assert (await _list(suite, status=pb.MEMBER_STATUS_ERASED)).members == []
    assert len((await _list(suite)).members) == 5


async def test_list_members_bad_paging_input(suite: Suite) -> None:
    for i in range(3):
        await register(suite, f"1390013900{i}")
    first = await _list(suite, page_size=1, status=pb.MEMBER_STATUS_ACTIVE)
    assert first.next_page_token
    officer = suite.auth("officer")

    async def bad(request: pb.ListMembersRequest, field: str) -> None:
        await expect_error(
            suite.accounts.ListMembers(request, metadata=officer), INVALID, fields={field}
        )

    await bad(pb.ListMembersRequest(page_token="garbage!"), "page_token")
    await bad(pb.ListMembersRequest(page_token=first.next_page_token[:-3]), "page_token")
    # a token is only good for the filter it was issued for
    await bad(pb.ListMembersRequest(page_token=first.next_page_token), "page_token")
    await bad(
        pb.ListMembersRequest(page_token=first.next_page_token, status=pb.MEMBER_STATUS_FROZEN),
        "page_token",
    )
    await bad(pb.ListMembersRequest(page_size=-1), "page_size")
    await bad(pb.ListMembersRequest(status=9), "status")  # type: ignore[arg-type]
    # the token still works with its own filter
    second = await _list(
        suite, page_size=1, page_token=first.next_page_token, status=pb.MEMBER_STATUS_ACTIVE
    )
    assert len(second.members) == 1
    assert second.members[0].member_id != first.members[0].member_id


async def test_forged_page_tokens_are_invalid_argument(suite: Suite) -> None:
    await register(suite, PHONE)
    query = {"status": ""}
    officer = suite.auth("officer")
    for position in (
        {},
        {"t": "yesterday", "m": "m1"},
        {"t": 12, "m": "m1"},
        {"t": "2026-01-01T00:00:00", "m": "m1"},  # no time zone
        {"t": "2026-01-01T00:00:00+00:00", "m": "m\x00"},
        {"t": "2026-01-01T00:00:00+00:00", "m": ["not", "text"]},
        {"t": "0001-01-01T00:00:00+14:00", "m": "m1"},
    ):
        token = paging.encode_token(position, query)
        err = await expect_error(
            suite.accounts.ListMembers(pb.ListMembersRequest(page_token=token), metadata=officer),
            INVALID,
        )
        assert err.fields == {"page_token"}, (position, err.describe())


async def test_page_size_defaults_to_50_and_is_capped_at_500(suite: Suite) -> None:
    # 501 rows written directly: registering them one by one would be slow
    conn_rows = await fetchval(
        suite.dsn,
        "WITH ins AS (INSERT INTO accounts.members (member_id, status, phone_ct, phone_masked,"
        " created_at) SELECT 'mbulk' || lpad(i::text, 5, '0'), 'ACTIVE', '\\x00'::bytea,"
        " '139****0000', now() - make_interval(secs => 1000 - i)"
        " FROM generate_series(1, 501) AS i RETURNING 1) SELECT count(*) FROM ins",
    )
    assert conn_rows == 501
    default = await _list(suite)
    assert len(default.members) == 50
    assert default.next_page_token
    capped = await _list(suite, page_size=100_000)
    assert len(capped.members) == 500
    assert capped.next_page_token
    rest = await _list(suite, page_size=100_000, page_token=capped.next_page_token)
    assert [m.member_id for m in rest.members] == ["mbulk00501"]
    assert rest.next_page_token == ""
