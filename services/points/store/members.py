"""SQL of points.members: the members as accounts' outbox told points about them."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from services.points.domain.members import MemberRecord, MemberRow
from services.runtime.db import Conn

# the state the ledger acts on (domain/members.MemberState): a restricted member
# (RestrictMember) is RESTRICTED whatever accounts says, so every `state != ACTIVE` check
# refuses it with MEMBER_RESTRICTED
EFFECTIVE_STATE = "CASE WHEN m.restricted THEN 'RESTRICTED' ELSE m.state END"


def _row(record: asyncpg.Record) -> MemberRow:
    return MemberRow(
        member_id=record["member_id"],
        state=record["state"],
        referred_by=record["referred_by"],
        last_event_id=record["last_event_id"],
        registered_at=record["registered_at"],
    )


async def get_member(conn: Conn, member_id: str) -> MemberRecord | None:
    """A plain read (no lock): the ledger acts on the state its transaction sees; an event
    committed a moment later applies after it, as if it had arrived later."""
    row = await conn.fetchrow(
        f"SELECT member_id, {EFFECTIVE_STATE} AS state, referred_by FROM points.members m"
        " WHERE member_id = $1",
        member_id,
    )
    if row is None:
        return None
    return MemberRecord(row["member_id"], row["state"], row["referred_by"])


async def lock_members(conn: Conn, member_ids: Sequence[str]) -> dict[str, MemberRow]:
    """Locks the existing rows of these members for this transaction, in member order (the
    sort happens below the lock, so every caller takes the locks in one order)."""
    rows = await conn.fetch(
        "SELECT member_id, state, referred_by, last_event_id, registered_at"
        " FROM points.members WHERE member_id = ANY($1::text[])"
        " ORDER BY member_id FOR UPDATE",
        list(member_ids),
    )
    return {r["member_id"]: _row(r) for r in rows}


async def upsert_members(conn: Conn, rows: Sequence[MemberRow]) -> None:
    """Writes the rows in member order. The merge is itself order-tolerant, so that two
    transactions creating the same new member cannot undo each other: the newer event's
    state wins, the referrer is never replaced once known, and the earliest time is the
    registration time."""
    ordered = sorted(rows, key=lambda r: r.member_id)
    await conn.execute(
        "INSERT INTO points.members AS m"
        " (member_id, state, referred_by, last_event_id, registered_at)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],"
        " $5::timestamptz[]) ORDER BY 1"
        " ON CONFLICT (member_id) DO UPDATE SET"
        " state = CASE WHEN EXCLUDED.last_event_id > m.last_event_id"
        " THEN EXCLUDED.state ELSE m.state END,"
        " last_event_id = GREATEST(m.last_event_id, EXCLUDED.last_event_id),"
        " referred_by = COALESCE(m.referred_by, EXCLUDED.referred_by),"
        " registered_at = LEAST(m.registered_at, EXCLUDED.registered_at),"
        " updated_at = now()",
        [r.member_id for r in ordered],
        [r.state for r in ordered],
        [r.referred_by for r in ordered],
        [r.last_event_id for r in ordered],
        [r.registered_at for r in ordered],
    )


async def member_states(conn: Conn, member_ids: Sequence[str]) -> dict[str, str]:
    """The effective state of each of these members points knows."""
    rows = await conn.fetch(
        f"SELECT member_id, {EFFECTIVE_STATE} AS state FROM points.members m"
        " WHERE member_id = ANY($1::text[])",
        list(member_ids),
    )
    return {r["member_id"]: r["state"] for r in rows}


async def member_exists(conn: Conn, member_id: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM points.members WHERE member_id = $1", member_id)
    return found is not None
