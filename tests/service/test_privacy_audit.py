"""AuditService through gRPC against real PostgreSQL: listing with every filter and
pagination, chain verification (intact, altered, deleted, reordered, truncated at the head),
bad input, access, and no personal information in the events."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from membership.accounts.v1 import accounts_pb2 as apb
from membership.privacy.v1 import audit_pb2 as pb
from membership.privacy.v1 import consent_pb2 as cpb

from services.privacy import audit
from services.privacy.domain.audit import GENESIS_HASH, AuditEvent, entry_hash
from services.privacy.store import audit as audit_store
from tests.support.accounts import register
from tests.support.consent import grant_request, known_member, wallet, withdraw_request
from tests.support.privacy import (
    ACCOUNTS_SUBJECT,
    EMAIL,
    INVALID,
    PHONE,
    decrypt,
    decrypt_request,
    encrypt,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

DENIED = grpc.StatusCode.PERMISSION_DENIED
WALLET_SUBJECT = "wallet-app"


def officer(suite: Suite) -> Metadata:
    return suite.auth("officer", "officer:audit")


@pytest.fixture
async def tamper(suite: Suite) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection on which the append-only triggers do not fire."""
    conn = await asyncpg.connect(suite.dsn)
    await conn.execute("SET session_replication_role = replica")
    try:
        yield conn
    finally:
        await conn.close()


async def five_events(suite: Suite) -> None:
    """consent.grant, consent.withdraw (member maudit1, by the wallet backend), then
    fields.decrypt twice and consent.grant (member maudit2, by accounts and the wallet)."""
    first = await known_member(suite, "maudit1")
    await suite.consent.GrantConsent(
        grant_request(first, "marketing", request_id="g-a1"), metadata=wallet(suite)
    )
    await suite.consent.WithdrawConsent(
        withdraw_request(first, "marketing", request_id="w-a1"), metadata=wallet(suite)
    )
    phone_ct, email_ct = await encrypt(suite, "maudit2", [("phone", PHONE), ("email", EMAIL)])
    await decrypt(
        suite, "maudit2", [("phone", phone_ct), ("email", email_ct)], on_behalf_of="officer:li"
    )
    await decrypt(suite, "maudit2", [("phone", phone_ct)], purpose="delivery")
    await suite.consent.GrantConsent(
        grant_request("members/maudit2", "marketing", request_id="g-a2"), metadata=wallet(suite)
    )


async def one_more_read(suite: Suite) -> None:
    (phone_ct,) = await encrypt(suite, "maudit2", [("phone", PHONE)])
    await decrypt(suite, "maudit2", [("phone", phone_ct)])


async def list_all(suite: Suite, **filters: object) -> list[pb.AuditEvent]:
    response = await suite.audit.ListAuditEvents(
        pb.ListAuditEventsRequest(page_size=1000, **filters),  # type: ignore[arg-type]
        metadata=officer(suite),
    )
    assert response.next_page_token == ""
    return list(response.audit_events)


async def verify(suite: Suite, **request: object) -> pb.VerifyAuditChainResponse:
    response: pb.VerifyAuditChainResponse = await suite.audit.VerifyAuditChain(
        pb.VerifyAuditChainRequest(**request),  # type: ignore[arg-type]
        metadata=officer(suite),
    )
    return response


def actions(events: Sequence[pb.AuditEvent]) -> list[str]:
    return [e.action for e in events]


# --- listing ---------------------------------------------------------------------------------


async def test_events_are_listed_oldest_first_as_a_chain(suite: Suite) -> None:
    await five_events(suite)
    events = await list_all(suite)
    assert actions(events) == [
        "consent.grant",
        "consent.withdraw",
        "fields.decrypt",
        "fields.decrypt",
        "consent.grant",
    ]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs)
    assert [e.name for e in events] == [f"auditEvents/{s}" for s in seqs]
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.entry_hash
    read = events[2]
    assert (read.actor, read.actor_role, read.on_behalf_of) == (
        ACCOUNTS_SUBJECT,
        "service:accounts",
        "officer:li",
    )
    assert (read.subject_id, read.purpose) == ("maudit2", "customer support")
    assert list(read.fields) == ["accounts.members.phone", "accounts.members.email"]
    assert read.request_id
    # the listed content is exactly what was hashed
    event = AuditEvent(
        read.actor,
        read.actor_role,
        read.action,
        read.subject_id,
        tuple(read.fields),
        read.purpose,
        read.on_behalf_of,
        read.request_id,
    )
    occurred_at = read.occur_time.ToDatetime(tzinfo=UTC)
    assert entry_hash(read.prev_hash, occurred_at, event) == read.entry_hash


async def test_each_filter(suite: Suite) -> None:
    await five_events(suite)
    everything = await list_all(suite)

    assert actions(await list_all(suite, subject_id="maudit1")) == [
        "consent.grant",
        "consent.withdraw",
    ]
    assert [e.seq for e in await list_all(suite, action="consent.grant")] == [
        everything[0].seq,
        everything[4].seq,
    ]
    assert actions(await list_all(suite, action="consent.")) == [
        "consent.grant",
        "consent.withdraw",
        "consent.grant",
    ]
    # a prefix is a whole dotted part: `consent` alone is an exact action that no event has
    assert await list_all(suite, action="consent") == []
    assert await list_all(suite, action="fields.decrypt_refused") == []
    assert {e.actor for e in await list_all(suite, actor=WALLET_SUBJECT)} == {WALLET_SUBJECT}
    assert len(await list_all(suite, actor=ACCOUNTS_SUBJECT)) == 2
    # [start_time, end_time): the start is included, the end is not
    window = await list_all(
        suite, start_time=everything[1].occur_time, end_time=everything[3].occur_time
    )
    assert [e.seq for e in window] == [everything[1].seq, everything[2].seq]
    assert [e.seq for e in await list_all(suite, start_time=everything[4].occur_time)] == [
        everything[4].seq
    ]
    assert len(await list_all(suite, end_time=everything[4].occur_time)) == 4
    # filters combine with AND
    combined = await list_all(suite, subject_id="maudit2", action="consent.", actor=WALLET_SUBJECT)
    assert [e.seq for e in combined] == [everything[4].seq]


async def test_pages_follow_each_other_with_their_filter(suite: Suite) -> None:
    await five_events(suite)
    everything = await list_all(suite)
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        page = await suite.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=2, page_token=token), metadata=officer(suite)
        )
        pages += 1
        seen += [e.seq for e in page.audit_events]
        token = page.next_page_token
        if not token:
            break
    assert (pages, seen) == (3, [e.seq for e in everything])

    # a filtered list pages within its filter, and its token only serves that filter
    first = await suite.audit.ListAuditEvents(
        pb.ListAuditEventsRequest(action="consent.", page_size=1), metadata=officer(suite)
    )
    second = await suite.audit.ListAuditEvents(
        pb.ListAuditEventsRequest(action="consent.", page_size=2, page_token=first.next_page_token),
        metadata=officer(suite),
    )
    assert actions(second.audit_events) == ["consent.withdraw", "consent.grant"]
    assert second.next_page_token == ""
    await expect_error(
        suite.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(action="fields.", page_token=first.next_page_token),
            metadata=officer(suite),
        ),
        INVALID,
        fields={"page_token"},
    )


async def test_a_long_filter_still_pages(suite: Suite) -> None:
    """The longest actor a token may name, in characters JSON escapes, fits in a page token."""
    actor = "审计员" * 42 + "甲乙"  # 128 characters
    (phone_ct,) = await encrypt(suite, "maudit3", [("phone", PHONE)])
    for _ in range(2):
        await suite.privacy.DecryptFields(
            decrypt_request("maudit3", [("phone", phone_ct)]),
            metadata=suite.auth("service:accounts", actor),
        )
    where = {"actor": actor, "subject_id": "m" * 64, "action": "fields." + "d" * 57}
    seen = 0
    token = ""
    for _ in range(3):
        page = await suite.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(
                actor=actor, subject_id="maudit3", action="fields.", page_size=1, page_token=token
            ),
            metadata=officer(suite),
        )
        seen += len(page.audit_events)
        token = page.next_page_token
        if not token:
            break
    assert seen == 2
    assert await list_all(suite, **where) == []


async def test_default_and_capped_page_sizes(suite: Suite) -> None:
    await five_events(suite)
    for size in (0, 1001, 2**31 - 1):
        page = await suite.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(page_size=size), metadata=officer(suite)
        )
        assert (len(page.audit_events), page.next_page_token) == (5, "")


async def test_an_empty_log_lists_nothing(suite: Suite) -> None:
    assert await list_all(suite) == []


# --- verification ----------------------------------------------------------------------------


async def test_an_intact_chain_verifies(suite: Suite) -> None:
    empty = await verify(suite)
    assert (empty.intact, empty.entries_checked, empty.last_seq) == (True, 0, 0)
    assert empty.head_hash == GENESIS_HASH
    await five_events(suite)
    events = await list_all(suite)
    result = await verify(suite)
    assert result.intact
    assert result.problem == pb.CHAIN_PROBLEM_UNSPECIFIED
    assert (result.entries_checked, result.last_seq) == (5, events[-1].seq)
    assert result.head_hash == events[-1].entry_hash
    assert result.first_broken_seq == 0
    anchored = await verify(suite, expected_head_hash=result.head_hash)
    assert anchored.intact


async def test_a_range_and_small_batches_verify(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    await five_events(suite)
    events = await list_all(suite)
    # the walk goes on across batch boundaries (the services run in this process)
    monkeypatch.setattr(audit, "VERIFY_BATCH_ROWS", 2)
    whole = await verify(suite)
    assert (whole.intact, whole.entries_checked, whole.last_seq) == (True, 5, events[-1].seq)
    part = await verify(suite, from_seq=events[1].seq, to_seq=events[3].seq)
    assert (part.intact, part.entries_checked, part.last_seq) == (True, 3, events[3].seq)
    assert part.head_hash == events[3].entry_hash
    exact = await verify(suite, from_seq=events[4].seq, to_seq=events[4].seq)
    assert (exact.intact, exact.entries_checked) == (True, 1)


async def test_gaps_in_seq_from_rolled_back_appends_are_no_break(suite: Suite) -> None:
    await five_events(suite)
    conn = await asyncpg.connect(suite.dsn)
    try:
        transaction = conn.transaction()
        await transaction.start()
        await audit_store.append_audit(conn, AuditEvent("test", "admin", "test.rolled_back"))
        await transaction.rollback()
    finally:
        await conn.close()
    await one_more_read(suite)
    events = await list_all(suite)
    assert events[-1].seq - events[-2].seq == 2  # the rolled-back append took a seq
    result = await verify(suite)
    assert (result.intact, result.entries_checked) == (True, 6)


async def test_an_altered_event_is_a_hash_mismatch_at_its_seq(
    suite: Suite, tamper: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    await five_events(suite)
    events = await list_all(suite)
    target = events[2]
    await tamper.execute(
        "UPDATE privacy.audit_log SET purpose = 'nothing to see' WHERE seq = $1", target.seq
    )
    monkeypatch.setattr(audit, "VERIFY_BATCH_ROWS", 2)  # the break is in batch 2
    result = await verify(suite)
    assert not result.intact
    assert result.problem == pb.CHAIN_PROBLEM_HASH_MISMATCH
    assert result.first_broken_seq == target.seq
    assert (result.entries_checked, result.last_seq) == (2, events[1].seq)
    assert result.head_hash == events[1].entry_hash
    # a range after the altered event holds on its own
    after = await verify(suite, from_seq=events[3].seq)
    assert after.intact


async def test_an_event_with_a_recomputed_hash_breaks_the_next_link(
    suite: Suite, tamper: asyncpg.Connection
) -> None:
    """Whoever alters an event and recomputes its hash still breaks the link after it."""
    await five_events(suite)
    events = await list_all(suite)
    target = events[1]
    forged = AuditEvent(
        target.actor,
        target.actor_role,
        target.action,
        target.subject_id,
        tuple(target.fields),
        "channel=counter",
        target.on_behalf_of,
        target.request_id,
    )
    occurred_at = await tamper.fetchval(
        "SELECT occurred_at FROM privacy.audit_log WHERE seq = $1", target.seq
    )
    await tamper.execute(
        "UPDATE privacy.audit_log SET purpose = $2, entry_hash = $3 WHERE seq = $1",
        target.seq,
        forged.purpose,
        entry_hash(target.prev_hash, occurred_at, forged),
    )
    result = await verify(suite)
    assert (result.problem, result.first_broken_seq) == (
        pb.CHAIN_PROBLEM_LINK_BROKEN,
        events[2].seq,
    )


async def test_a_deleted_event_is_a_broken_link_at_the_next(
    suite: Suite, tamper: asyncpg.Connection
) -> None:
    await five_events(suite)
    events = await list_all(suite)
    await tamper.execute("DELETE FROM privacy.audit_log WHERE seq = $1", events[2].seq)
    result = await verify(suite)
    assert not result.intact
    assert result.problem == pb.CHAIN_PROBLEM_LINK_BROKEN
    assert result.first_broken_seq == events[3].seq
    assert (result.entries_checked, result.last_seq) == (2, events[1].seq)
    # the first event deleted: the second no longer follows the genesis hash
    await tamper.execute("DELETE FROM privacy.audit_log WHERE seq = $1", events[0].seq)
    first = await verify(suite)
    assert (first.problem, first.first_broken_seq) == (
        pb.CHAIN_PROBLEM_LINK_BROKEN,
        events[1].seq,
    )


async def test_swapped_events_are_caught(suite: Suite, tamper: asyncpg.Connection) -> None:
    """Two events trade places: each keeps its content and hashes, under the other's seq."""
    await five_events(suite)
    events = await list_all(suite)
    a, b = events[1].seq, events[3].seq
    async with tamper.transaction():
        rows = await tamper.fetch(
            "SELECT * FROM privacy.audit_log WHERE seq = ANY($1::bigint[]) ORDER BY seq", [a, b]
        )
        await tamper.execute("DELETE FROM privacy.audit_log WHERE seq = ANY($1::bigint[])", [a, b])
        for row, new_seq in ((rows[0], b), (rows[1], a)):
            values = dict(row) | {"seq": new_seq}
            columns = ", ".join(values)
            params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
            await tamper.execute(
                f"INSERT INTO privacy.audit_log ({columns}) OVERRIDING SYSTEM VALUE"
                f" VALUES ({params})",
                *values.values(),
            )
    listed = await list_all(suite)
    assert [e.seq for e in listed] == [e.seq for e in events]
    assert listed[1].entry_hash == events[3].entry_hash  # the swap happened
    result = await verify(suite)
    assert not result.intact
    assert result.problem == pb.CHAIN_PROBLEM_LINK_BROKEN
    assert result.first_broken_seq == a


async def test_deleting_the_newest_events_needs_an_anchor(
    suite: Suite, tamper: asyncpg.Connection
) -> None:
    await five_events(suite)
    anchor = await verify(suite)
    await tamper.execute("DELETE FROM privacy.audit_log WHERE seq = $1", anchor.last_seq)
    # the shorter chain is a valid chain: the chain alone cannot tell
    shorter = await verify(suite)
    assert (shorter.intact, shorter.entries_checked) == (True, 4)
    # the head recorded earlier outside the database can
    result = await verify(suite, expected_head_hash=anchor.head_hash)
    assert not result.intact
    assert result.problem == pb.CHAIN_PROBLEM_HEAD_MISMATCH
    assert result.first_broken_seq == 0
    assert result.head_hash == shorter.head_hash


async def test_an_anchor_taken_earlier_is_checked_up_to_its_seq(suite: Suite) -> None:
    await five_events(suite)
    anchor = await verify(suite)
    await one_more_read(suite)
    # later events move the head: the old anchor is checked where it was taken
    moved = await verify(suite, expected_head_hash=anchor.head_hash)
    assert moved.problem == pb.CHAIN_PROBLEM_HEAD_MISMATCH
    at_anchor = await verify(suite, to_seq=anchor.last_seq, expected_head_hash=anchor.head_hash)
    assert (at_anchor.intact, at_anchor.last_seq) == (True, anchor.last_seq)


# --- bad input and access --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "violations"),
    [
        ({"page_token": "not-a-token"}, {"page_token"}),
        ({"page_token": "x" * 600}, {"page_token"}),
        ({"page_size": -1}, {"page_size"}),
        (
            {
                "start_time": timestamp_pb2.Timestamp(seconds=1_800_000_000),
                "end_time": timestamp_pb2.Timestamp(seconds=1_700_000_000),
            },
            {"end_time"},
        ),
        (
            {
                "start_time": timestamp_pb2.Timestamp(seconds=1_700_000_000),
                "end_time": timestamp_pb2.Timestamp(seconds=1_700_000_000),
            },
            {"end_time"},
        ),
        ({"start_time": timestamp_pb2.Timestamp(seconds=-(10**12))}, {"start_time"}),
        ({"action": "Consent.Grant"}, {"action"}),
        ({"action": "consent..grant"}, {"action"}),
        ({"action": "consent%"}, {"action"}),
        ({"subject_id": "m 1"}, {"subject_id"}),
        ({"actor": "a" * 129}, {"actor"}),
        ({"actor": "a\nb"}, {"actor"}),
        ({"subject_id": "m 1", "action": "x%", "actor": "\x00"}, {"subject_id", "action", "actor"}),
    ],
)
async def test_bad_list_requests(
    suite: Suite, request_fields: dict[str, object], violations: set[str]
) -> None:
    await expect_error(
        suite.audit.ListAuditEvents(
            pb.ListAuditEventsRequest(**request_fields),  # type: ignore[arg-type]
            metadata=officer(suite),
        ),
        INVALID,
        fields=violations,
    )


@pytest.mark.parametrize(
    ("request_fields", "violations"),
    [
        ({"from_seq": -1}, {"from_seq"}),
        ({"to_seq": -1}, {"to_seq"}),
        ({"from_seq": 5, "to_seq": 4}, {"to_seq"}),
        ({"expected_head_hash": b"short"}, {"expected_head_hash"}),
        ({"expected_head_hash": b"\x01" * 33}, {"expected_head_hash"}),
    ],
)
async def test_bad_verify_requests(
    suite: Suite, request_fields: dict[str, object], violations: set[str]
) -> None:
    await expect_error(
        suite.audit.VerifyAuditChain(
            pb.VerifyAuditChainRequest(**request_fields),  # type: ignore[arg-type]
            metadata=officer(suite),
        ),
        INVALID,
        fields=violations,
    )


@pytest.mark.parametrize("role", ["wallet-backend", "settlement", "service:accounts"])
async def test_only_officers_and_admins_read_the_audit_log(suite: Suite, role: str) -> None:
    for call in (
        suite.audit.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=suite.auth(role)),
        suite.audit.VerifyAuditChain(pb.VerifyAuditChainRequest(), metadata=suite.auth(role)),
    ):
        await expect_error(call, DENIED)
    for allowed in ("officer", "admin"):
        await suite.audit.ListAuditEvents(pb.ListAuditEventsRequest(), metadata=suite.auth(allowed))
        await suite.audit.VerifyAuditChain(
            pb.VerifyAuditChainRequest(), metadata=suite.auth(allowed)
        )


# --- no personal information -----------------------------------------------------------------


async def test_events_carry_no_personal_information(suite: Suite) -> None:
    await five_events(suite)
    phone, email = "13900139000", "li.si@example.com"
    member = await register(suite, phone, email=email, display_name="李四")
    await suite.accounts.GetMember(
        apb.GetMemberRequest(name=member.name, view=apb.MEMBER_VIEW_FULL, purpose="complaint 9"),
        metadata=suite.auth("officer", "officer:wang"),
    )
    await suite.consent.GrantConsent(
        cpb.GrantConsentRequest(
            member=member.name,
            grants=[cpb.PurposeGrant(purpose="marketing", notice_version=1)],
            channel=cpb.CHANNEL_APP,
            request_id="g-pii",
        ),
        metadata=wallet(suite),
    )
    events = await list_all(suite)
    reads = [e for e in events if e.action == "fields.decrypt" and e.subject_id == member.member_id]
    assert reads and reads[0].on_behalf_of == "officer:wang"
    secrets = [
        PHONE.decode(),
        EMAIL.decode(),
        phone,
        "+86" + phone,
        email,
        "李四",
    ]
    for event in events:
        text = str(event) + event.prev_hash.hex() + event.entry_hash.hex()
        for secret in secrets:
            assert secret not in text, event.action
