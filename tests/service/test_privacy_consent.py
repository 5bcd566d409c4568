"""ConsentService through gRPC against real PostgreSQL: every RPC, every error (with nothing
written), idempotent repeats, append-only records, audit events, stale consent after a
material notice version."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import grpc
import pytest
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import field_crypto_pb2 as ppb

from services.privacy.domain.audit import GENESIS_HASH, first_broken_link
from services.privacy.domain.purpose_catalogue import PurposesError
from tests.support.consent import (
    check,
    grant_request,
    known_member,
    privacy_with_purposes,
    purposes_file,
    record_count,
    wallet,
    withdraw_request,
)
from tests.support.privacy import FAILED_PRECONDITION, INVALID, audit_entries, privacy_role
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

NOT_FOUND = grpc.StatusCode.NOT_FOUND
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
GRANTED = cpb.CONSENT_STATUS_GRANTED
WITHDRAWN = cpb.CONSENT_STATUS_WITHDRAWN
NOT_GIVEN = cpb.CONSENT_STATUS_NOT_GIVEN


async def consent_audits(db: asyncpg.Connection) -> list[tuple[str, str, tuple[str, ...], str]]:
    return [
        (e.event.action, e.event.subject_id, tuple(e.event.fields), e.event.purpose)
        for e in await audit_entries(db)
        if e.event.action.startswith("consent.")
    ]


async def nothing_written(db: asyncpg.Connection) -> None:
    assert await record_count(db) == 0
    assert await consent_audits(db) == []


# --- reads -----------------------------------------------------------------------------------


async def test_list_purposes_ships_the_default_set(suite: Suite) -> None:
    response = await suite.consent.ListPurposes(cpb.ListPurposesRequest(), metadata=wallet(suite))
    by_code = {p.code: p for p in response.purposes}
    assert list(by_code) == [
        "service",
        "payment_records",
        "marketing",
        "personalization",
        "third_party_sharing",
        "cross_border",
    ]
    assert [c for c, p in by_code.items() if p.necessary] == ["service"]
    assert {c for c, p in by_code.items() if p.separate_consent} == {
        "payment_records",
        "third_party_sharing",
        "cross_border",
    }
    assert by_code["service"].legal_basis == "contract"
    assert by_code["marketing"].current_notice_version == 1
    assert list(by_code["marketing"].notice_versions) == [
        cpb.NoticeVersion(version=1, material=True)
    ]


async def test_a_new_member_has_given_no_consent(suite: Suite) -> None:
    member = await known_member(suite)
    got = await suite.consent.GetConsents(
        cpb.GetConsentsRequest(member=member), metadata=suite.auth("officer")
    )
    assert len(got.consents) == 6
    assert {c.status for c in got.consents} == {NOT_GIVEN}
    assert not any(c.HasField("update_time") for c in got.consents)
    checked = await check(suite.consent, suite, member, "service")
    assert (checked.allowed, checked.status, checked.necessary) == (False, NOT_GIVEN, True)


# --- grant and withdraw ----------------------------------------------------------------------


async def test_grant_then_get_and_check(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite)
    granted = await suite.consent.GrantConsent(
        grant_request(member, "marketing", "payment_records"), metadata=wallet(suite)
    )
    assert [(c.purpose, c.status, c.notice_version) for c in granted.consents] == [
        ("marketing", GRANTED, 1),
        ("payment_records", GRANTED, 1),
    ]
    assert granted.consents[0].name == f"{member}/consents/marketing"
    assert granted.consents[0].channel == cpb.CHANNEL_APP
    assert granted.consents[0].HasField("update_time")
    got = await suite.consent.GetConsents(
        cpb.GetConsentsRequest(member=member), metadata=suite.auth("service:points")
    )
    status = {c.purpose: c.status for c in got.consents}
    assert status["marketing"] == status["payment_records"] == GRANTED
    assert status["personalization"] == NOT_GIVEN
    checked = await check(suite.consent, suite, member, "payment_records")
    assert (checked.allowed, checked.stale, checked.consented_notice_version) == (True, False, 1)
    assert (await check(suite.consent, suite, member, "cross_border")).allowed is False
    assert await record_count(db) == 2


async def test_withdraw_in_one_call(suite: Suite) -> None:
    member = await known_member(suite)
    await suite.consent.GrantConsent(
        grant_request(member, "marketing", "personalization", "cross_border"),
        metadata=wallet(suite),
    )
    withdrawn = await suite.consent.WithdrawConsent(
        withdraw_request(member, "marketing", "personalization"), metadata=wallet(suite)
    )
    assert [(c.purpose, c.status, c.channel) for c in withdrawn.consents] == [
        ("marketing", WITHDRAWN, cpb.CHANNEL_WEB),
        ("personalization", WITHDRAWN, cpb.CHANNEL_WEB),
    ]
    checked = await check(suite.consent, suite, member, "marketing")
    assert (checked.allowed, checked.status) == (False, WITHDRAWN)
    assert (await check(suite.consent, suite, member, "cross_border")).allowed
    # consent can be given again after a withdrawal
    await suite.consent.GrantConsent(
        grant_request(member, "marketing", request_id="g-2"), metadata=wallet(suite)
    )
    assert (await check(suite.consent, suite, member, "marketing")).allowed


# --- errors, with nothing written ------------------------------------------------------------


async def test_withdrawing_a_necessary_purpose_is_refused(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await known_member(suite)
    await expect_error(
        suite.consent.WithdrawConsent(
            withdraw_request(member, "marketing", "service"), metadata=wallet(suite)
        ),
        FAILED_PRECONDITION,
        reason="NECESSARY_PURPOSE",
    )
    await nothing_written(db)


async def test_unknown_purposes_are_field_violations(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite)
    await expect_error(
        suite.consent.GrantConsent(
            grant_request(member, "marketing", "telepathy"), metadata=wallet(suite)
        ),
        INVALID,
        fields={"grants[1].purpose"},
    )
    await expect_error(
        suite.consent.WithdrawConsent(withdraw_request(member, "Bad!"), metadata=wallet(suite)),
        INVALID,
        fields={"purposes[0]"},
    )
    await expect_error(
        suite.consent.CheckConsent(
            cpb.CheckConsentRequest(member=member, purpose="telepathy"), metadata=wallet(suite)
        ),
        INVALID,
        fields={"purpose"},
    )
    await nothing_written(db)


async def test_a_notice_version_that_is_not_current_is_refused(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await known_member(suite)
    err = await expect_error(
        suite.consent.GrantConsent(
            grant_request(member, "marketing", version=2), metadata=wallet(suite)
        ),
        FAILED_PRECONDITION,
        reason="NOTICE_VERSION_STALE",
    )
    assert err.metadata == {"grant_index": "0"}
    await nothing_written(db)


async def test_a_member_privacy_does_not_know(suite: Suite, db: asyncpg.Connection) -> None:
    member = "members/mnobody"
    for call in (
        suite.consent.GrantConsent(grant_request(member, "marketing"), metadata=wallet(suite)),
        suite.consent.WithdrawConsent(
            withdraw_request(member, "marketing"), metadata=wallet(suite)
        ),
        suite.consent.GetConsents(cpb.GetConsentsRequest(member=member), metadata=wallet(suite)),
        check(suite.consent, suite, member, "marketing"),
    ):
        await expect_error(call, NOT_FOUND, reason="MEMBER_UNKNOWN")
    await nothing_written(db)


async def test_an_erased_member(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite, "merased")
    await suite.privacy.DestroySubjectKey(
        ppb.DestroySubjectKeyRequest(subject_id="merased", request_id="e-1", reason="dsr-1"),
        metadata=privacy_role(suite),
    )
    # erased before privacy ever held a key: the tombstone says erased as well
    await suite.privacy.DestroySubjectKey(
        ppb.DestroySubjectKeyRequest(subject_id="mtombstone", request_id="e-2", reason="dsr-2"),
        metadata=privacy_role(suite),
    )
    for name in (member, "members/mtombstone"):
        for call in (
            suite.consent.GrantConsent(grant_request(name, "marketing"), metadata=wallet(suite)),
            check(suite.consent, suite, name, "marketing"),
        ):
            await expect_error(call, FAILED_PRECONDITION, reason="MEMBER_ERASED")
    await nothing_written(db)


async def test_bounded_and_well_formed_input(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite)
    too_many = cpb.GrantConsentRequest(
        member=member,
        grants=[cpb.PurposeGrant(purpose="marketing", notice_version=1)] * 17,
        channel=cpb.CHANNEL_APP,
        request_id="g-1",
    )
    err = await expect_error(suite.consent.GrantConsent(too_many, metadata=wallet(suite)), INVALID)
    assert "grants" in err.fields
    await expect_error(
        suite.consent.GrantConsent(
            grant_request(member, "marketing", "marketing"), metadata=wallet(suite)
        ),
        INVALID,
        fields={"grants[1].purpose"},
    )
    await expect_error(
        suite.consent.GrantConsent(
            cpb.GrantConsentRequest(member="members/a/b", grants=[cpb.PurposeGrant()]),
            metadata=wallet(suite),
        ),
        INVALID,
        fields={
            "member",
            "grants[0].purpose",
            "grants[0].notice_version",
            "channel",
            "request_id",
        },
    )
    await expect_error(
        suite.consent.WithdrawConsent(
            withdraw_request(member, "marketing", request_id="x" * 129), metadata=wallet(suite)
        ),
        INVALID,
        fields={"request_id"},
    )
    await expect_error(
        suite.consent.WithdrawConsent(
            cpb.WithdrawConsentRequest(member=member, channel=cpb.CHANNEL_APP, request_id="w"),
            metadata=wallet(suite),
        ),
        INVALID,
        fields={"purposes"},
    )
    await nothing_written(db)


async def test_officers_read_but_do_not_change_consent(suite: Suite) -> None:
    member = await known_member(suite)
    await expect_error(
        suite.consent.GrantConsent(
            grant_request(member, "marketing"), metadata=suite.auth("officer")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await expect_error(
        suite.consent.WithdrawConsent(
            withdraw_request(member, "marketing"), metadata=suite.auth("service:points")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


# --- idempotency -----------------------------------------------------------------------------


async def test_a_repeat_returns_the_first_result(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite)
    request = grant_request(member, "marketing", "cross_border")
    first = await suite.consent.GrantConsent(request, metadata=wallet(suite))
    again = await suite.consent.GrantConsent(request, metadata=wallet(suite))
    assert again == first
    withdraw = withdraw_request(member, "marketing")
    first_w = await suite.consent.WithdrawConsent(withdraw, metadata=wallet(suite))
    # a repeat after a later change still answers what the request did then
    await suite.consent.GrantConsent(
        grant_request(member, "marketing", request_id="g-2"), metadata=wallet(suite)
    )
    assert await suite.consent.WithdrawConsent(withdraw, metadata=wallet(suite)) == first_w
    assert await record_count(db) == 4
    assert [a[0] for a in await consent_audits(db)] == [
        "consent.grant",
        "consent.withdraw",
        "consent.grant",
    ]


async def test_a_reused_request_id_with_another_payload(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member = await known_member(suite)
    await suite.consent.GrantConsent(grant_request(member, "marketing"), metadata=wallet(suite))
    for call in (
        suite.consent.GrantConsent(
            grant_request(member, "personalization"), metadata=wallet(suite)
        ),
        suite.consent.GrantConsent(
            grant_request(member, "marketing", channel=cpb.CHANNEL_COUNTER), metadata=wallet(suite)
        ),
        suite.consent.WithdrawConsent(
            withdraw_request(member, "marketing", request_id="g-1"), metadata=wallet(suite)
        ),
    ):
        await expect_error(call, ALREADY_EXISTS, reason="IDEMPOTENCY_KEY_REUSED")
    assert await record_count(db) == 1


# --- records and audit -----------------------------------------------------------------------


async def test_consent_records_are_append_only(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite)
    await suite.consent.GrantConsent(grant_request(member, "marketing"), metadata=wallet(suite))
    for statement in (
        "UPDATE privacy.consent_records SET channel = 'web'",
        "DELETE FROM privacy.consent_records",
        "TRUNCATE privacy.consent_records",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db.execute(statement)
    assert await record_count(db) == 1


async def test_every_change_is_audited_on_the_chain(suite: Suite, db: asyncpg.Connection) -> None:
    member = await known_member(suite)
    await suite.consent.GrantConsent(
        grant_request(member, "marketing", "payment_records"), metadata=wallet(suite)
    )
    await suite.consent.WithdrawConsent(
        withdraw_request(member, "payment_records", channel=cpb.CHANNEL_COUNTER),
        metadata=suite.auth("admin"),
    )
    assert await consent_audits(db) == [
        ("consent.grant", "mconsent1", ("marketing@1", "payment_records@1"), "channel=app"),
        ("consent.withdraw", "mconsent1", ("payment_records@1",), "channel=counter"),
    ]
    entries = await audit_entries(db)
    assert entries[-1].event.actor_role == "admin"
    assert entries[-1].event.request_id == "w-1"
    assert first_broken_link(entries, GENESIS_HASH) is None


# --- notice versions -------------------------------------------------------------------------


async def test_a_material_notice_version_makes_consent_stale(suite: Suite, tmp_path: Path) -> None:
    member = await known_member(suite)
    await suite.consent.GrantConsent(
        grant_request(member, "marketing", "payment_records"), metadata=wallet(suite)
    )
    notices = "[{ version = 1, material = true }, { version = 2, material = true }]"
    path = purposes_file(tmp_path, "marketing", notices)
    async with privacy_with_purposes(suite, path) as consent:
        checked = await check(consent, suite, member, "marketing")
        assert (checked.allowed, checked.stale, checked.status) == (False, True, GRANTED)
        assert (checked.consented_notice_version, checked.current_notice_version) == (1, 2)
        # other purposes are untouched
        assert (await check(consent, suite, member, "payment_records")).allowed
        await expect_error(
            consent.GrantConsent(
                grant_request(member, "marketing", request_id="g-2"), metadata=wallet(suite)
            ),
            FAILED_PRECONDITION,
            reason="NOTICE_VERSION_STALE",
        )
        # consenting to the new notice makes processing allowed again
        await consent.GrantConsent(
            grant_request(member, "marketing", version=2, request_id="g-3"), metadata=wallet(suite)
        )
        checked = await check(consent, suite, member, "marketing")
        assert (checked.allowed, checked.stale, checked.consented_notice_version) == (
            True,
            False,
            2,
        )


async def test_a_non_material_notice_version_keeps_consent(suite: Suite, tmp_path: Path) -> None:
    member = await known_member(suite)
    await suite.consent.GrantConsent(grant_request(member, "marketing"), metadata=wallet(suite))
    notices = "[{ version = 1, material = true }, { version = 2, material = false }]"
    path = purposes_file(tmp_path, "marketing", notices)
    async with privacy_with_purposes(suite, path) as consent:
        checked = await check(consent, suite, member, "marketing")
        assert (checked.allowed, checked.stale) == (True, False)
        assert (checked.consented_notice_version, checked.current_notice_version) == (1, 2)
        got = await consent.GetConsents(
            cpb.GetConsentsRequest(member=member), metadata=wallet(suite)
        )
        marketing = next(c for c in got.consents if c.purpose == "marketing")
        assert (marketing.stale, marketing.current_notice_version) == (False, 2)


async def test_a_published_notice_version_cannot_be_rewritten(suite: Suite, tmp_path: Path) -> None:
    path = purposes_file(tmp_path, "marketing", "[{ version = 1, material = false }]")
    with pytest.raises(PurposesError, match="marketing"):
        async with privacy_with_purposes(suite, path):
            pass
