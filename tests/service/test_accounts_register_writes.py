"""What a new registration writes, and in how many statements (issue 14): one statement
inserts the member, its referral code, its lookups, its idempotency record and its outbox
event (store/registration.py), with no explicit transaction around it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import asyncpg
import grpc
import pytest
from asyncpg.connection import LoggedQuery

from services.accounts import registration as registration_module
from services.accounts.domain.members import LookupKind, Member
from services.accounts.domain.registration import Registration
from services.accounts.registration import Registrations
from services.accounts.store import lookup as lookup_store
from services.runtime.db import Conn
from tests.service.test_accounts_register import _FakePrivacy
from tests.support.accounts import fetch, fetchval, register, table_counts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

E164 = "+8613800138000"


@pytest.fixture
async def logged(database: str) -> AsyncIterator[tuple[asyncpg.Pool, list[str]]]:
    """A pool whose connections record every statement they send, BEGIN and COMMIT too."""
    queries: list[str] = []

    def record(query: LoggedQuery) -> None:
        queries.append(" ".join(query.query.split()))

    async def init(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(record)

    async def no_reset(conn: asyncpg.Connection) -> None:
        """As the services' pools (services.runtime.db.create_pool): no reset statements."""

    pool = await asyncpg.create_pool(database, min_size=1, max_size=1, init=init, reset=no_reset)
    try:
        yield pool, queries
    finally:
        await pool.close()


async def test_a_new_registration_is_two_statements_without_begin_or_commit(
    logged: tuple[asyncpg.Pool, list[str]],
) -> None:
    pool, queries = logged
    registrations = Registrations(pool, _FakePrivacy())
    # the first use of a statement on a connection may make asyncpg read type information
    await registrations.register(Registration("w0", E164, "w0@example.com", "", ""))
    queries.clear()
    member = await registrations.register(
        Registration("w1", "+8613800138009", "a@example.com", "Ann", referral_code="")
    )
    assert [q.split()[0] for q in queries] == ["SELECT", "WITH"], queries
    assert "registration_requests" in queries[0]
    tables = ("members", "member_lookup", "referral_codes", "registration_requests", "outbox")
    counts = {
        table: await pool.fetchval(
            f"SELECT count(*) FROM accounts.{table} WHERE member_id = $1", member.member_id
        )
        for table in tables
    }
    assert counts == {
        "members": 1,
        "member_lookup": 2,
        "referral_codes": 1,
        "registration_requests": 1,
        "outbox": 1,
    }


async def test_the_stored_snapshot_is_the_member_as_returned(
    logged: tuple[asyncpg.Pool, list[str]],
) -> None:
    """The statement builds the idempotency snapshot in SQL: it must be what
    Member.to_snapshot would have stored, since repeats are answered from it."""
    pool, _ = logged
    registrations = Registrations(pool, _FakePrivacy())
    referrer = await registrations.register(Registration("s1", E164, "", "", ""))
    member = await registrations.register(
        Registration("s2", "+8613800138001", "b@example.com", "张三", referrer.referral_code)
    )
    for first in (referrer, member):
        text = await pool.fetchval(
            "SELECT snapshot FROM accounts.registration_requests WHERE member_id = $1",
            first.member_id,
        )
        stored = json.loads(text)
        assert set(stored) == set(first.to_snapshot())
        assert Member.from_snapshot(stored) == first
    assert member.referred_by == referrer.member_id
    assert (member.email, member.display_name) == ("b***@example.com", "张*")


async def test_a_repeat_answers_exactly_like_the_first_call(suite: Suite) -> None:
    """The replay comes from the snapshot the statement built: every field, the
    timestamps to the microsecond, is what the first call answered."""
    values = {"email": "r@example.com", "display_name": "R", "request_id": "again"}
    first = await register(suite, "13900000000", **values)
    again = await register(suite, "13900000000", **values)
    assert again == first


def codes(*values: str) -> Iterator[str]:
    yield from values


async def test_a_taken_referral_code_is_drawn_again(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = await register(suite, "13900000001")
    before = await table_counts(suite.dsn)
    drawn = codes(holder.referral_code, "FRESHCDE")
    monkeypatch.setattr(registration_module, "new_referral_code", lambda: next(drawn))
    member = await register(suite, "13900000002", email="d@example.com")
    assert member.referral_code == "FRESHCDE"
    after = await table_counts(suite.dsn)
    assert {t: after[t] - before[t] for t in after} == {
        "members": 1,
        "member_lookup": 2,
        "referral_codes": 1,
        "member_status_changes": 0,
        "registration_requests": 1,
        "member_requests": 0,
        "outbox": 1,
    }
    owner = await fetchval(
        suite.dsn,
        "SELECT member_id FROM accounts.referral_codes WHERE code = $1",
        holder.referral_code,
    )
    assert owner == holder.member_id


async def test_only_taken_referral_codes_fail_the_registration_writing_nothing(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = await register(suite, "13900000003")
    before = await table_counts(suite.dsn)
    monkeypatch.setattr(registration_module, "new_referral_code", lambda: holder.referral_code)
    await expect_error(
        register(suite, "13900000004"),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="REFERRAL_CODES_EXHAUSTED",
    )
    assert await table_counts(suite.dsn) == before


async def test_phone_and_email_both_taken_name_the_email_as_before(suite: Suite) -> None:
    """Kinds are inserted and named in sorted order (email, phone), as they were when each
    lookup was its own statement."""
    await register(suite, "13900000005")
    await register(suite, "13900000006", email="taken@example.com")
    before = await table_counts(suite.dsn)
    await expect_error(
        register(suite, "13900000005", email="taken@example.com"),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="EMAIL_TAKEN",
    )
    await expect_error(
        register(suite, "13900000005", email="free@example.com"),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="PHONE_TAKEN",
    )
    assert await table_counts(suite.dsn) == before


async def test_a_clash_freed_before_it_is_named_registers_on_the_next_attempt(
    suite: Suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique violation does not say which entry clashed; when the one read after it
    finds none taken (the holder was erased meanwhile), the statement is tried again."""
    holder = await register(suite, "13900000007")
    real = lookup_store.first_taken

    async def erased_meanwhile(
        conn: Conn, digests: dict[LookupKind, bytes | None]
    ) -> LookupKind | None:
        await conn.execute(
            "DELETE FROM accounts.member_lookup WHERE member_id = $1", holder.member_id
        )
        return await real(conn, digests)

    monkeypatch.setattr(lookup_store, "first_taken", erased_meanwhile)
    member = await register(suite, "13900000007")
    rows = await fetch(
        suite.dsn, "SELECT member_id FROM accounts.member_lookup WHERE kind = 'phone'"
    )
    assert [r["member_id"] for r in rows] == [member.member_id]


async def test_a_member_id_clash_is_not_mistaken_for_a_taken_value(
    logged: tuple[asyncpg.Pool, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the lookup and request_id keys are answered as taken: any other unique key
    (a member id drawn twice, 95 random bits) surfaces as the bug it would be."""
    pool, _ = logged
    registrations = Registrations(pool, _FakePrivacy())
    first = await registrations.register(Registration("c1", E164, "", "", ""))
    monkeypatch.setattr(registration_module, "new_member_id", lambda: first.member_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await registrations.register(Registration("c2", "+8613800138002", "", "", ""))
    assert await pool.fetchval("SELECT count(*) FROM accounts.members") == 1
