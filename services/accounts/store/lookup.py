"""SQL of the blind index (accounts.member_lookup): keyed hashes of a member's normalised
phone and email, pointing at the member."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg

from services.accounts.domain.members import LookupKind
from services.accounts.store.unique import UniqueViolation
from services.runtime.db import Conn


async def find_by_digest(conn: Conn, kind: LookupKind, digest: bytes) -> str | None:
    value = await conn.fetchval(
        "SELECT member_id FROM accounts.member_lookup WHERE kind = $1 AND digest = $2",
        kind.value,
        digest,
    )
    return None if value is None else str(value)


async def first_taken(conn: Conn, digests: Mapping[LookupKind, bytes | None]) -> LookupKind | None:
    """The first kind, in the mapping's order, whose digest some member holds; one read for
    all of them."""
    given = [(kind, digest) for kind, digest in digests.items() if digest is not None]
    if not given:
        return None
    value = await conn.fetchval(
        "SELECT entry.kind FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY"
        " AS entry(kind, digest, n)"
        " JOIN accounts.member_lookup AS l ON l.kind = entry.kind AND l.digest = entry.digest"
        " ORDER BY entry.n LIMIT 1",
        [kind.value for kind, _ in given],
        [digest for _, digest in given],
    )
    return None if value is None else LookupKind(value)


async def write_lookups(
    conn: Conn, member_id: str, digests: Mapping[LookupKind, bytes | None]
) -> None:
    """Points the blind index of each kind at the member (None: removes the member's entry of
    that kind), replacing the member's previous entries. Kinds are written in sorted order,
    so that every transaction takes these index locks in one order."""
    for kind in sorted(digests):
        await conn.execute(
            "DELETE FROM accounts.member_lookup WHERE member_id = $1 AND kind = $2",
            member_id,
            kind.value,
        )
        digest = digests[kind]
        if digest is not None:
            await _insert_lookup(conn, kind, digest, member_id)


async def _insert_lookup(conn: Conn, kind: LookupKind, digest: bytes, member_id: str) -> None:
    try:
        await conn.execute(
            "INSERT INTO accounts.member_lookup (kind, digest, member_id) VALUES ($1, $2, $3)",
            kind.value,
            digest,
            member_id,
        )
    except asyncpg.UniqueViolationError as exc:
        raise UniqueViolation(kind) from exc


async def drop_lookup(conn: Conn, member_id: str, kind: LookupKind | None = None) -> int:
    """Removes the member's entries (of one kind, or all); how many there were."""
    result = await conn.execute(
        "DELETE FROM accounts.member_lookup"
        " WHERE member_id = $1 AND ($2::text IS NULL OR kind = $2)",
        member_id,
        None if kind is None else kind.value,
    )
    return int(result.split()[-1])
