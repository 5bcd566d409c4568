"""SQL of ExplainMemberRules: what decides which rules apply to one member, in one read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from services.points.store.restrictions import RestrictionRow
from services.points.store.tiers import TIER_COLUMNS, TierState, qualifying_sql, state_of
from services.runtime.db import Conn


@dataclass(frozen=True)
class MemberFacts:
    """A member's standing as the ledger stores it (no personal information)."""

    state: str  # as accounts told points: ACTIVE, FROZEN, CLOSED or ERASED
    restriction: RestrictionRow | None
    paused_causes: tuple[str, ...]  # the causes pausing settlement now, sorted
    tier: TierState | None
    qualifying: int  # the window sum
    available: int  # below 0 while the member owes points (allow_negative refunds)


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
        restriction = RestrictionRow(
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
