"""SQL of the idempotency records: registrations (accounts.registration_requests) and the
mutations of an existing member (accounts.member_requests), each with its first result."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from services.accounts.domain.idempotency import (
    MemberRequestRecord,
    Method,
    RegistrationRecord,
)
from services.accounts.domain.members import Member
from services.runtime.db import Conn


async def get_registration(conn: Conn, request_id: str) -> RegistrationRecord | None:
    """The registration's record; both fields None for an erased member's tombstone."""
    row = await conn.fetchrow(
        "SELECT request_hash, snapshot FROM accounts.registration_requests WHERE request_id = $1",
        request_id,
    )
    if row is None:
        return None
    if row["request_hash"] is None or row["snapshot"] is None:
        return RegistrationRecord(None, None)
    return RegistrationRecord(bytes(row["request_hash"]), json.loads(row["snapshot"]))


async def get_member_request(
    conn: Conn, member_id: str, *, request_id: str
) -> MemberRequestRecord | None:
    row = await conn.fetchrow(
        "SELECT method, request_hash, snapshot FROM accounts.member_requests"
        " WHERE member_id = $1 AND request_id = $2",
        member_id,
        request_id,
    )
    if row is None:
        return None
    return MemberRequestRecord(
        row["method"], bytes(row["request_hash"]), json.loads(row["snapshot"])
    )


async def insert_member_request(
    conn: Conn,
    member: Member,
    *,
    request_id: str,
    method: Method,
    request_hash: bytes,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Records the first result: the member's masked view, plus `extra` keys of the reply."""
    await conn.execute(
        "INSERT INTO accounts.member_requests (member_id, request_id, method, request_hash,"
        " snapshot) VALUES ($1, $2, $3, $4, $5)",
        member.member_id,
        request_id,
        method.value,
        request_hash,
        json.dumps(member.to_snapshot() | dict(extra or {})),
    )


async def forget_requests(conn: Conn, member_id: str, *, kept_method: Method) -> None:
    """Idempotency records hold masks and keyed hashes of personal data: erasure drops them,
    except those of `kept_method` (erasure's own, which hold nothing personal), and keeps
    the registration as a tombstone (its request_id still names the erased member)."""
    await conn.execute(
        "DELETE FROM accounts.member_requests WHERE member_id = $1 AND method <> $2",
        member_id,
        kept_method.value,
    )
    await conn.execute(
        "UPDATE accounts.registration_requests SET request_hash = NULL, snapshot = NULL"
        " WHERE member_id = $1",
        member_id,
    )
    await conn.execute("DELETE FROM accounts.referral_codes WHERE member_id = $1", member_id)
