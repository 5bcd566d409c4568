"""SQL of consent: the purposes catalogue and the append-only consent records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import asyncpg

from services.privacy.domain.consent import Channel, ConsentAction, ConsentRecord, ConsentTally
from services.privacy.domain.purpose_catalogue import Catalogue
from services.runtime.db import Conn

# serialises catalogue syncs when several replicas start with a new purposes file
PURPOSES_LOCK = (0x6D656D62, 0x70757270)  # "memb", "purp"
# per-member lock namespace for consent changes ("cons"): keeps a member's records in order
# and makes the idempotency check and the insert one step
CONSENT_LOCK_NAMESPACE = 0x636F6E73


class PublishedNotice(NamedTuple):
    purpose_code: str
    version: int


class ConsentCounts(NamedTuple):
    tallies: list[ConsentTally]
    members: int  # members with any record


def _record(row: asyncpg.Record) -> ConsentRecord:
    return ConsentRecord(
        row["purpose_code"],
        ConsentAction(row["action"]),
        row["notice_version"],
        Channel(row["channel"]),
        row["recorded_at"],
        row["request_id"],
        bytes(row["request_hash"]),
    )


_COLUMNS = "purpose_code, action, notice_version, channel, recorded_at, request_id, request_hash"


async def sync_catalogue(conn: Conn, catalogue: Catalogue) -> list[PublishedNotice]:
    """Upserts the purposes and adds new notice versions. Returns the published notices
    whose `material` flag in the file differs from the recorded one: published notices are
    history, so the caller refuses to start on such a file."""
    purposes = list(catalogue.purposes.values())
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *PURPOSES_LOCK)
        await conn.executemany(
            "INSERT INTO privacy.purposes (code, description, legal_basis, necessary,"
            " separate_consent) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (code) DO UPDATE SET"
            " description = EXCLUDED.description, legal_basis = EXCLUDED.legal_basis,"
            " necessary = EXCLUDED.necessary, separate_consent = EXCLUDED.separate_consent,"
            " synced_at = now()",
            [
                (p.code, p.description, p.legal_basis, p.necessary, p.separate_consent)
                for p in purposes
            ],
        )
        notices = [(p.code, n.version, n.material) for p in purposes for n in p.notices]
        await conn.executemany(
            "INSERT INTO privacy.purpose_notices (purpose_code, version, material)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            notices,
        )
        rows = await conn.fetch(
            "SELECT purpose_code, version, material FROM privacy.purpose_notices"
            " WHERE purpose_code = ANY($1::text[])",
            [p.code for p in purposes],
        )
    wanted = {(code, version): material for code, version, material in notices}
    return sorted(
        PublishedNotice(r["purpose_code"], r["version"])
        for r in rows
        if wanted.get((r["purpose_code"], r["version"]), r["material"]) != r["material"]
    )


async def lock_member(conn: Conn, member_id: str) -> None:
    """Transaction lock on one member's consent; call inside the transaction."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", CONSENT_LOCK_NAMESPACE, member_id
    )


async def request_records(conn: Conn, member_id: str, *, request_id: str) -> list[ConsentRecord]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.consent_records"
        " WHERE member_id = $1 AND request_id = $2 ORDER BY seq",
        member_id,
        request_id,
    )
    return [_record(r) for r in rows]


async def insert_records(conn: Conn, member_id: str, records: Sequence[ConsentRecord]) -> None:
    await conn.executemany(
        f"INSERT INTO privacy.consent_records (member_id, {_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                member_id,
                r.purpose_code,
                r.action,
                r.notice_version,
                r.channel,
                r.recorded_at,
                r.request_id,
                r.request_hash,
            )
            for r in records
        ],
    )


async def latest_records(
    conn: Conn, member_id: str, purpose_codes: Sequence[str]
) -> list[ConsentRecord]:
    """The latest record of each of the member's purposes among `purpose_codes`."""
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (purpose_code) {_COLUMNS} FROM privacy.consent_records"
        " WHERE member_id = $1 AND purpose_code = ANY($2::text[])"
        " ORDER BY purpose_code, seq DESC",
        member_id,
        list(purpose_codes),
    )
    return [_record(r) for r in rows]


async def history(conn: Conn, member_id: str, limit: int) -> list[ConsentRecord]:
    """The member's consent records, oldest first (at most `limit`)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.consent_records WHERE member_id = $1"
        " ORDER BY seq LIMIT $2",
        member_id,
        limit,
    )
    return [_record(r) for r in rows]


# the latest record of every member and purpose, without members whose key is destroyed
# (erased); consent_records_latest serves the DISTINCT ON in index order
_LATEST_OF_LIVE_MEMBERS = (
    "SELECT DISTINCT ON (r.member_id, r.purpose_code)"
    " r.member_id, r.purpose_code, r.action, r.notice_version"
    " FROM privacy.consent_records r"
    " WHERE NOT EXISTS (SELECT 1 FROM privacy.subject_keys k"
    "  WHERE k.subject_id = r.member_id AND k.destroyed_at IS NOT NULL)"
    " ORDER BY r.member_id, r.purpose_code, r.seq DESC"
)


async def consent_tallies(conn: Conn, timeout_s: float) -> ConsentCounts:
    """Every (purpose, action, notice version) with its member count, and the number of
    members with any record; one snapshot, bounded by `timeout_s`."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
        rows = await conn.fetch(
            f"SELECT purpose_code, action, notice_version, count(*) AS members"
            f" FROM ({_LATEST_OF_LIVE_MEMBERS}) latest"
            " GROUP BY purpose_code, action, notice_version"
        )
        members = await conn.fetchval(
            "SELECT count(DISTINCT r.member_id) FROM privacy.consent_records r"
            " WHERE NOT EXISTS (SELECT 1 FROM privacy.subject_keys k"
            "  WHERE k.subject_id = r.member_id AND k.destroyed_at IS NOT NULL)"
        )
    tallies = [
        ConsentTally(
            r["purpose_code"], ConsentAction(r["action"]), r["notice_version"], r["members"]
        )
        for r in rows
    ]
    return ConsentCounts(tallies, int(members))
