"""Helpers for tests of the accounts service: registering members and reading its tables."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg
from membership.accounts.v1 import accounts_pb2 as pb

from tests.support.suite import Suite

# every member-data table of the accounts schema (not its schema_migrations)
ACCOUNTS_TABLES = (
    "members",
    "member_lookup",
    "referral_codes",
    "member_status_changes",
    "registration_requests",
    "member_requests",
    "outbox",
)

_phones = itertools.count(10_000_000)
_request_ids = itertools.count(1)


def mainland_phone(n: int) -> str:
    """A valid mainland mobile number (no +86): 139 followed by 8 digits of `n`."""
    return f"139{n % 100_000_000:08d}"


def next_phone() -> str:
    return mainland_phone(next(_phones))


def next_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{next(_request_ids)}"


async def register(
    suite: Suite,
    phone: str | None = None,
    *,
    email: str = "",
    display_name: str = "",
    referral_code: str = "",
    request_id: str | None = None,
    role: str = "wallet-backend",
) -> pb.Member:
    member: pb.Member = await suite.accounts.RegisterMember(
        pb.RegisterMemberRequest(
            request_id=request_id or next_request_id("reg"),
            phone=phone or next_phone(),
            email=email,
            display_name=display_name,
            referral_code=referral_code,
        ),
        metadata=suite.auth(role),
    )
    return member


async def table_counts(dsn: str, tables: tuple[str, ...] = ACCOUNTS_TABLES) -> dict[str, int]:
    """Row counts of accounts tables, to prove that a failed call wrote nothing."""
    conn = await asyncpg.connect(dsn)
    try:
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM accounts.{t}")) for t in tables}
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
