"""SQL of the versioned program rules (a small reference table), and of what decides which
rules apply to one member (ExplainMemberRules), in one read."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from services.points.domain.program import MemberFacts
from services.points.domain.restrictions import Restriction
from services.points.store.tiers import TIER_COLUMNS, qualifying_sql, state_of
from services.runtime.db import Conn

# serialises version assignment when several replicas start with a new rules file
RULES_LOCK = (0x6D656D62, 0x72756C65)  # "memb", "rule"


async def register_rules(conn: Conn, digest: str, document: dict[str, Any]) -> int:
    """The version of these rules: the existing one for a known digest, else the next."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *RULES_LOCK)
        version = await conn.fetchval(
            "SELECT version FROM points.program_rules WHERE digest = $1", digest
        )
        if version is None:
            version = await conn.fetchval(
                "INSERT INTO points.program_rules (version, digest, document)"
                " SELECT COALESCE(max(version), 0) + 1, $1, $2 FROM points.program_rules"
                " RETURNING version",
                digest,
                json.dumps(document, sort_keys=True),
            )
    return int(version)


async def rules_document(conn: Conn, version: int) -> dict[str, Any] | None:
    raw = await conn.fetchval(
        "SELECT document FROM points.program_rules WHERE version = $1", version
    )
    return None if raw is None else dict(json.loads(raw))


async def rules_documents(conn: Conn, versions: Sequence[int]) -> dict[int, str]:
    """The stored documents of these versions, as text (domain/tiers.rules_of parses them)."""
    rows = await conn.fetch(
        "SELECT version, document::text AS document FROM points.program_rules"
        " WHERE version = ANY($1::bigint[])",
        list(versions),
    )
    return {int(r["version"]): r["document"] for r in rows}


# One statement, so that every figure comes from one snapshot: a settlement committing
# between two reads could otherwise show a tier that the window sum does not support.
_FACTS = (
    "SELECT m.state, r.legal_basis, r.retention_end, r.request_id, r.request_hash,"
    " r.restricted_at,"
    " ARRAY(SELECT pp.cause FROM points.processing_pauses pp"
    "  WHERE pp.member_id = m.member_id AND pp.paused ORDER BY pp.cause) AS paused_causes,"
    f" {TIER_COLUMNS}, {qualifying_sql('m.member_id', 2)} AS qualifying,"
    " COALESCE(b.available, 0) AS available"
    " FROM points.members m"
    " LEFT JOIN points.member_restrictions r ON r.member_id = m.member_id"
    " LEFT JOIN points.member_tiers mt ON mt.member_id = m.member_id"
    " LEFT JOIN points.balances b ON b.member_id = m.member_id"
    " WHERE m.member_id = $1"
)


async def member_facts(conn: Conn, member_id: str, window: tuple[date, date]) -> MemberFacts | None:
    """None when points does not know the member (the accounts outbox has not told it)."""
    row = await conn.fetchrow(_FACTS, member_id, *window)
    if row is None:
        return None
    restriction = None
    # `members.restricted` is set in the same transaction as the restriction row
    if row["request_id"] is not None:
        restriction = Restriction(
            member_id,
            row["legal_basis"],
            row["retention_end"],
            row["request_id"],
            bytes(row["request_hash"]),
            row["restricted_at"],
        )
    return MemberFacts(
        state=row["state"],
        restriction=restriction,
        paused_causes=tuple(row["paused_causes"]),
        tier=state_of(row),
        qualifying=int(row["qualifying"]),
        available=int(row["available"]),
    )


async def rules_loaded_at(conn: Conn, version: int) -> datetime | None:
    """When points first recorded this rules version: from then on it was in force."""
    found: datetime | None = await conn.fetchval(
        "SELECT loaded_at FROM points.program_rules WHERE version = $1", version
    )
    return found
