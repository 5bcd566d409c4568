"""SQL of the members themselves (accounts.members) and their referral codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import ListPosition, Member, StoredMember
from services.runtime.db import Conn

# a member row as every read returns it (store/registration.py selects it from its insert)
MEMBER_COLUMNS = (
    "member_id, status, phone_ct, email_ct, display_name_ct, phone_masked, email_masked,"
    " display_name_masked, referral_code, COALESCE(referred_by, '') AS referred_by,"
    " created_at, updated_at"
)


def stored_member(row: asyncpg.Record | None) -> StoredMember:
    """The member of a row of MEMBER_COLUMNS."""
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
        f"SELECT {MEMBER_COLUMNS} FROM accounts.members WHERE member_id = $1{lock}", member_id
    )
    return None if row is None else stored_member(row)


async def holder_of_referral_code(conn: Conn, code: str) -> StoredMember | None:
    """The member holding the referral code, in one read."""
    row = await conn.fetchrow(
        f"SELECT {MEMBER_COLUMNS} FROM accounts.members WHERE member_id ="
        " (SELECT member_id FROM accounts.referral_codes WHERE code = $1)",
        code,
    )
    return None if row is None else stored_member(row)


@dataclass(frozen=True)
class NewMember:
    """A member to insert, ACTIVE, with the ciphertexts and masks of its personal values
    (store/registration.py inserts it)."""

    member_id: str
    ciphertexts: Mapping[str, bytes | None]
    masks: Mapping[str, str]
    referred_by: str | None


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
        f" RETURNING {MEMBER_COLUMNS}",
        *args,
    )
    return stored_member(row)


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
        + f" WHERE member_id = $1 RETURNING {MEMBER_COLUMNS}",
        member_id,
        status.value,
    )
    return stored_member(row)


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
        f"SELECT {MEMBER_COLUMNS} FROM accounts.members {clause}"
        " ORDER BY created_at, member_id LIMIT $1",
        *args,
    )
    return [stored_member(r).member for r in rows]
