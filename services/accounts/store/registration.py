"""SQL of a new registration in one statement: the member with its referral code, its
blind-index entries, its idempotency record and its member.registered outbox event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from services.accounts.domain.events import NewEvent
from services.accounts.domain.members import LookupKind, StoredMember
from services.accounts.store import lookup as lookup_store
from services.accounts.store.members import MEMBER_COLUMNS, NewMember, stored_member
from services.accounts.store.unique import UniqueKey, UniqueViolation
from services.runtime.db import Conn

# An ISO 8601 text of a timestamptz that datetime.fromisoformat reads back to the same
# instant (UTC, whatever the session's TimeZone), as Member.to_snapshot writes it.
_ISO_UTC = """to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""

# One statement, so one round trip and its own transaction (no BEGIN, no COMMIT). Every
# insert hangs on the one before it: the member is inserted only if the referral code was
# free (`code` returns no row when it is taken: nothing is written, the caller draws
# another), and the rest only from the inserted member. A taken phone, email or request_id
# fails the whole statement with a unique violation, which writes nothing either. The
# snapshot is the masked member as inserted: the keys and values of Member.to_snapshot,
# built here because the row's timestamps come from the database clock
# (tests/service/test_accounts_register.py checks that they agree).
INSERT_REGISTRATION = f"""
WITH code AS (
    INSERT INTO accounts.referral_codes (code, member_id) VALUES ($2, $1)
    ON CONFLICT (code) DO NOTHING
    RETURNING code
), member AS (
    INSERT INTO accounts.members (member_id, status, phone_ct, email_ct, display_name_ct,
        phone_masked, email_masked, display_name_masked, referral_code, referred_by)
    SELECT $1, 'ACTIVE', $3::bytea, $4::bytea, $5::bytea, $6::text, $7::text, $8::text,
        code.code, $9::text
    FROM code
    RETURNING *
), lookup AS (
    INSERT INTO accounts.member_lookup (kind, digest, member_id)
    SELECT entry.kind, entry.digest, member.member_id
    FROM member, unnest($10::text[], $11::bytea[]) WITH ORDINALITY AS entry(kind, digest, n)
    ORDER BY entry.n
), request AS (
    INSERT INTO accounts.registration_requests (request_id, request_hash, member_id, snapshot)
    SELECT $12::text, $13::bytea, member.member_id, jsonb_build_object(
        'member_id', member.member_id,
        'status', member.status,
        'phone', member.phone_masked,
        'email', member.email_masked,
        'display_name', member.display_name_masked,
        'referral_code', member.referral_code,
        'referred_by', COALESCE(member.referred_by, ''),
        'created_at', {_ISO_UTC.format("member.created_at")},
        'updated_at', {_ISO_UTC.format("member.updated_at")})
    FROM member
), event AS (
    INSERT INTO accounts.outbox (member_id, event_type, payload)
    SELECT member.member_id, $14::text, $15::jsonb
    FROM member
)
SELECT {MEMBER_COLUMNS} FROM member
"""

# the unique keys the statement can meet, by constraint (a member_id clash, 95 random
# bits, is left to surface as the bug it would be)
_LOOKUP_KEY = "member_lookup_pkey"
_REQUEST_KEY = "registration_requests_pkey"


@dataclass(frozen=True)
class NewRegistration:
    """What a new registration writes: the member, its idempotency record (request_id and
    fingerprint), its blind-index digests by kind and its outbox event."""

    member: NewMember
    request_id: str
    request_hash: bytes
    lookups: Mapping[LookupKind, bytes | None]
    event: NewEvent


async def insert_registration(
    conn: Conn, new: NewRegistration, *, code: str
) -> StoredMember | None:
    """The member as inserted, with `code` as their referral code; None when nothing was
    written and another attempt may succeed: the code is taken, or the phone or email that
    clashed was freed before it could be named. Raises UniqueViolation for a phone, email
    (the first taken, in sorted kind order) or request_id taken."""
    kinds = sorted(kind for kind, digest in new.lookups.items() if digest is not None)
    digests = [new.lookups[kind] for kind in kinds]
    try:
        row = await conn.fetchrow(INSERT_REGISTRATION, *_arguments(new, code, kinds, digests))
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == _REQUEST_KEY:
            raise UniqueViolation(UniqueKey.REQUEST_ID) from exc
        if exc.constraint_name != _LOOKUP_KEY:
            raise
        # the error does not say which entry clashed: the first one taken now is it
        taken = await lookup_store.first_taken(conn, dict(zip(kinds, digests, strict=True)))
        if taken is None:
            return None
        raise UniqueViolation(taken) from exc
    return None if row is None else stored_member(row)


def _arguments(
    new: NewRegistration, code: str, kinds: list[LookupKind], digests: list[bytes | None]
) -> tuple[object, ...]:
    member = new.member
    return (
        member.member_id,
        code,
        member.ciphertexts["phone"],
        member.ciphertexts.get("email"),
        member.ciphertexts.get("display_name"),
        member.masks["phone"],
        member.masks.get("email", ""),
        member.masks.get("display_name", ""),
        member.referred_by,
        [kind.value for kind in kinds],
        digests,
        new.request_id,
        new.request_hash,
        new.event.event_type.value,
        json.dumps(dict(new.event.payload)),
    )
