"""SQL of the members themselves (accounts.members) and their referral codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import ListPosition, Member, StoredMember
from services.runtime.db import Conn

_MEMBER_COLUMNS = (
    "member_id, status, phone_ct, email_ct, display_name_ct, phone_masked, email_masked,"
    " display_name_masked, referral_code, COALESCE(referred_by, '') AS referred_by,"
    " created_at, updated_at"
)


def _stored(row: asyncpg.Record | None) -> StoredMember:
    if row is None:
        raise LookupError("member row vanished inside its own transaction")
    member = Member(
        member_id=row["member_id"],
        status=Status(row["status"]),
        phone=row["phone_masked"],
        email=row["email_masked"],
        display_name=row["display_name_masked"],
        referral_code=row["referral_code"],
        referred_by=row["referred_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
    cts = {
        "phone": row["phone_ct"],
        "email": row["email_ct"],
        "display_name": row["display_name_ct"],
    }
    return StoredMember(member, cts)


async def get_member(conn: Conn, member_id: str, for_update: bool = False) -> StoredMember | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_MEMBER_COLUMNS} FROM accounts.members WHERE member_id = $1{lock}", member_id
    )
    return None if row is None else _stored(row)


async def find_by_referral_code(conn: Conn, code: str) -> str | None:
    value = await conn.fetchval(
        "SELECT member_id FROM accounts.referral_codes WHERE code = $1", code
    )
    return None if value is None else str(value)


@dataclass(frozen=True)
class NewMember:
    """A member to insert, ACTIVE, with the ciphertexts and masks of its personal values."""

    member_id: str
    ciphertexts: Mapping[str, bytes | None]
    masks: Mapping[str, str]
    referred_by: str | None


async def insert_member(conn: Conn, new: NewMember) -> StoredMember:
    row = await conn.fetchrow(
        "INSERT INTO accounts.members (member_id, status, phone_ct, email_ct, display_name_ct,"
        " phone_masked, email_masked, display_name_masked, referred_by)"
        " VALUES ($1, 'ACTIVE', $2, $3, $4, $5, $6, $7, $8)"
        f" RETURNING {_MEMBER_COLUMNS}",
        new.member_id,
        new.ciphertexts["phone"],
        new.ciphertexts.get("email"),
        new.ciphertexts.get("display_name"),
        new.masks["phone"],
        new.masks.get("email", ""),
        new.masks.get("display_name", ""),
        new.referred_by,
    )
    return _stored(row)


async def claim_referral_code(conn: Conn, member_id: str, *, code: str) -> StoredMember | None:
    """Gives `code` to the member if free and returns the member's row with it; None if
    another member holds the code."""
    inserted = await conn.fetchval(
        "INSERT INTO accounts.referral_codes (code, member_id) VALUES ($1, $2)"
        " ON CONFLICT (code) DO NOTHING RETURNING code",
        code,
        member_id,
    )
    if inserted is None:
        return None
    row = await conn.fetchrow(
        "UPDATE accounts.members SET referral_code = $2 WHERE member_id = $1"
        f" RETURNING {_MEMBER_COLUMNS}",
        member_id,
        code,
    )
    return _stored(row)


async def update_personal(
    conn: Conn,
    member_id: str,
    ciphertexts: Mapping[str, bytes | None],
    masks: Mapping[str, str],
) -> StoredMember:
    sets: list[str] = ["updated_at = now()"]
    args: list[object] = [member_id]
    for column in ciphertexts:
        args += [ciphertexts[column], masks[column]]
        sets.append(f"{column}_ct = ${len(args) - 1}, {column}_masked = ${len(args)}")
    row = await conn.fetchrow(
        f"UPDATE accounts.members SET {', '.join(sets)} WHERE member_id = $1"
        f" RETURNING {_MEMBER_COLUMNS}",
        *args,
    )
    return _stored(row)


async def set_status(conn: Conn, member_id: str, status: Status) -> StoredMember:
    erase = status is Status.ERASED
    row = await conn.fetchrow(
        "UPDATE accounts.members SET status = $2, updated_at = now()"
        + (
            ", phone_ct = NULL, email_ct = NULL, display_name_ct = NULL, phone_masked = '',"
            " email_masked = '', display_name_masked = '', referral_code = '', erased_at = now()"
            if erase
            else ""
        )
        + f" WHERE member_id = $1 RETURNING {_MEMBER_COLUMNS}",
        member_id,
        status.value,
    )
    return _stored(row)


async def referred_members(conn: Conn, member_id: str, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT member_id FROM accounts.members WHERE referred_by = $1"
        " ORDER BY created_at, member_id LIMIT $2",
        member_id,
        limit,
    )
    return [r["member_id"] for r in rows]


async def list_members(
    conn: Conn,
    status: Status | None,
    after: ListPosition | None,
    limit: int,
) -> list[Member]:
    args: list[Any] = [limit]
    where = []
    if status is not None:
        args.append(status.value)
        where.append(f"status = ${len(args)}")
    if after is not None:
        args += [after.created_at, after.member_id]
        where.append(f"(created_at, member_id) > (${len(args) - 1}, ${len(args)})")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await conn.fetch(
        f"SELECT {_MEMBER_COLUMNS} FROM accounts.members {clause}"
        " ORDER BY created_at, member_id LIMIT $1",
        *args,
    )
    return [_stored(r).member for r in rows]
