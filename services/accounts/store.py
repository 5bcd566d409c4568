"""SQL of the accounts service (schema `accounts`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.accounts.lifecycle import Status
from services.accounts.model import Member, StatusChange, StoredMember
from services.runtime.db import Conn

_MEMBER_COLUMNS = (
    "member_id, status, phone_ct, email_ct, display_name_ct, phone_masked, email_masked,"
    " display_name_masked, referral_code, COALESCE(referred_by, '') AS referred_by,"
    " created_at, updated_at"
)


class UniqueViolation(Exception):
    """A unique key is taken; `constraint` names which."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = constraint


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


async def find_by_digest(conn: Conn, kind: str, digest: bytes) -> str | None:
    value = await conn.fetchval(
        "SELECT member_id FROM accounts.member_lookup WHERE kind = $1 AND digest = $2", kind, digest
    )
    return None if value is None else str(value)


async def find_by_referral_code(conn: Conn, code: str) -> str | None:
    value = await conn.fetchval(
        "SELECT member_id FROM accounts.referral_codes WHERE code = $1", code
    )
    return None if value is None else str(value)


@dataclass(frozen=True)
class NewMember:
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


async def claim_referral_code(conn: Conn, member_id: str, code: str) -> bool:
    """Gives `code` to the member if free; False if another member holds it."""
    inserted = await conn.fetchval(
        "INSERT INTO accounts.referral_codes (code, member_id) VALUES ($1, $2)"
        " ON CONFLICT (code) DO NOTHING RETURNING code",
        code,
        member_id,
    )
    if inserted is None:
        return False
    await conn.execute(
        "UPDATE accounts.members SET referral_code = $2 WHERE member_id = $1", member_id, code
    )
    return True


async def write_lookups(conn: Conn, member_id: str, digests: Mapping[str, bytes | None]) -> None:
    """Points the blind index of each kind at the member (None: removes the member's entry of
    that kind), replacing the member's previous entries. Kinds are written in sorted order,
    so that every transaction takes these index locks in one order."""
    for kind in sorted(digests):
        await conn.execute(
            "DELETE FROM accounts.member_lookup WHERE member_id = $1 AND kind = $2", member_id, kind
        )
        digest = digests[kind]
        if digest is not None:
            await _insert_lookup(conn, kind, digest, member_id)


async def _insert_lookup(conn: Conn, kind: str, digest: bytes, member_id: str) -> None:
    try:
        await conn.execute(
            "INSERT INTO accounts.member_lookup (kind, digest, member_id) VALUES ($1, $2, $3)",
            kind,
            digest,
            member_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(kind) from exc


async def drop_lookup(conn: Conn, member_id: str, kind: str | None = None) -> int:
    result = await conn.execute(
        "DELETE FROM accounts.member_lookup"
        " WHERE member_id = $1 AND ($2::text IS NULL OR kind = $2)",
        member_id,
        kind,
    )
    return int(result.split()[-1])


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


async def add_status_change(
    conn: Conn, member_id: str, change: tuple[Status, Status, str, str]
) -> None:
    from_status, to_status, reason, actor = change
    await conn.execute(
        "INSERT INTO accounts.member_status_changes (member_id, from_status, to_status, reason,"
        " actor) VALUES ($1, $2, $3, $4, $5)",
        member_id,
        from_status.value,
        to_status.value,
        reason,
        actor,
    )


async def status_history(conn: Conn, member_id: str) -> list[StatusChange]:
    rows = await conn.fetch(
        "SELECT from_status, to_status, reason, actor, changed_at"
        " FROM accounts.member_status_changes WHERE member_id = $1 ORDER BY seq",
        member_id,
    )
    return [
        StatusChange(
            Status(r["from_status"]),
            Status(r["to_status"]),
            r["reason"],
            r["actor"],
            r["changed_at"],
        )
        for r in rows
    ]


async def referred_members(conn: Conn, member_id: str, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT member_id FROM accounts.members WHERE referred_by = $1"
        " ORDER BY created_at, member_id LIMIT $2",
        member_id,
        limit,
    )
    return [r["member_id"] for r in rows]


async def get_registration(
    conn: Conn, request_id: str
) -> tuple[bytes | None, dict[str, Any] | None] | None:
    """(request hash, snapshot) of a registration; both None for an erased member's tombstone."""
    row = await conn.fetchrow(
        "SELECT request_hash, snapshot FROM accounts.registration_requests WHERE request_id = $1",
        request_id,
    )
    if row is None:
        return None
    if row["request_hash"] is None or row["snapshot"] is None:
        return None, None
    return bytes(row["request_hash"]), json.loads(row["snapshot"])


async def insert_registration(
    conn: Conn, request_id: str, request_hash: bytes, member: Member
) -> None:
    try:
        await conn.execute(
            "INSERT INTO accounts.registration_requests (request_id, request_hash, member_id,"
            " snapshot) VALUES ($1, $2, $3, $4)",
            request_id,
            request_hash,
            member.member_id,
            json.dumps(member.to_snapshot()),
        )
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation("request_id") from exc


async def get_member_request(
    conn: Conn, member_id: str, request_id: str
) -> tuple[str, bytes, dict[str, Any]] | None:
    row = await conn.fetchrow(
        "SELECT method, request_hash, snapshot FROM accounts.member_requests"
        " WHERE member_id = $1 AND request_id = $2",
        member_id,
        request_id,
    )
    if row is None:
        return None
    return row["method"], bytes(row["request_hash"]), json.loads(row["snapshot"])


async def insert_member_request(
    conn: Conn,
    request_id: str,
    method: str,
    request_hash: bytes,
    member: Member,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Records the first result: the member's masked view, plus `extra` keys of the reply."""
    await conn.execute(
        "INSERT INTO accounts.member_requests (member_id, request_id, method, request_hash,"
        " snapshot) VALUES ($1, $2, $3, $4, $5)",
        member.member_id,
        request_id,
        method,
        request_hash,
        json.dumps(member.to_snapshot() | dict(extra or {})),
    )


async def forget_requests(conn: Conn, member_id: str, kept_method: str) -> None:
    """Idempotency records hold masks and keyed hashes of personal data: erasure drops them,
    except those of `kept_method` (erasure's own, which hold nothing personal), and keeps
    the registration as a tombstone (its request_id still names the erased member)."""
    await conn.execute(
        "DELETE FROM accounts.member_requests WHERE member_id = $1 AND method <> $2",
        member_id,
        kept_method,
    )
    await conn.execute(
        "UPDATE accounts.registration_requests SET request_hash = NULL, snapshot = NULL"
        " WHERE member_id = $1",
        member_id,
    )
    await conn.execute("DELETE FROM accounts.referral_codes WHERE member_id = $1", member_id)


async def add_outbox_event(
    conn: Conn, member_id: str, event_type: str, payload: Mapping[str, Any]
) -> None:
    await conn.execute(
        "INSERT INTO accounts.outbox (member_id, event_type, payload) VALUES ($1, $2, $3)",
        member_id,
        event_type,
        json.dumps(dict(payload)),
    )


async def list_members(
    conn: Conn,
    status: Status | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Member]:
    args: list[Any] = [limit]
    where = []
    if status is not None:
        args.append(status.value)
        where.append(f"status = ${len(args)}")
    if after is not None:
        args += [after[0], after[1]]
        where.append(f"(created_at, member_id) > (${len(args) - 1}, ${len(args)})")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = await conn.fetch(
        f"SELECT {_MEMBER_COLUMNS} FROM accounts.members {clause}"
        " ORDER BY created_at, member_id LIMIT $1",
        *args,
    )
    return [_stored(r).member for r in rows]


# --- outbox relay -------------------------------------------------------------------------
# The relay reads the unpublished events in event order and marks what points accepted.
# Only the event types it knows are read: others stay for whatever relays them.

# a transaction-level advisory lock: one relay at a time across replicas (released with the
# transaction, so a relay that dies cannot hold it)
OUTBOX_LOCK = (0x6F757462, 1)  # "outb", the points relay


@dataclass(frozen=True)
class OutboxEvent:
    event_id: int
    member_id: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime


async def try_lock_outbox(conn: Conn) -> bool:
    """Takes the relay's lock for the current transaction; False if another relay has it."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", *OUTBOX_LOCK))


async def unpublished_events(
    conn: Conn, event_types: Sequence[str], limit: int
) -> list[OutboxEvent]:
    rows = await conn.fetch(
        "SELECT event_id, member_id, event_type, payload, created_at FROM accounts.outbox"
        " WHERE published_at IS NULL AND event_type = ANY($1::text[])"
        " ORDER BY event_id LIMIT $2",
        list(event_types),
        limit,
    )
    return [
        OutboxEvent(
            r["event_id"],
            r["member_id"],
            r["event_type"],
            json.loads(r["payload"]),
            r["created_at"],
        )
        for r in rows
    ]


async def mark_published(conn: Conn, events: Sequence[OutboxEvent]) -> None:
    await conn.execute(
        "UPDATE accounts.outbox AS o SET published_at = now()"
        " FROM unnest($1::text[], $2::bigint[]) AS p(member_id, event_id)"
        " WHERE o.member_id = p.member_id AND o.event_id = p.event_id",
        [e.member_id for e in events],
        [e.event_id for e in events],
    )
