"""Members as the accounts service tells points about them: registrations, referrers and
status changes, delivered at least once and in any order by accounts' outbox relay.

Each member row remembers the newest outbox event applied (`last_event_id`; accounts
numbers a member's events in the order they happened), so a redelivered or overtaken event
changes nothing. The one exception is a registration that arrives after a later status
change created the row: it still fills in the referrer and the registration time, which
only a registration carries.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.points import unknown_members
from services.points.store import members as store
from services.points.store import unknown_members as unknown_store
from services.points.store.members import MemberRecord, MemberRow
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import DomainError, ViolationCollector
from services.runtime.names import is_member_id

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENTS",
    "REGISTERED",
    "STATES",
    "STATUS_CHANGED",
    "MemberDirectory",
    "MemberEvent",
    "MemberRecord",
    "apply_event",
]

log = logging.getLogger("membership.points.members")

REGISTERED = "REGISTERED"
STATUS_CHANGED = "STATUS_CHANGED"
EVENT_TYPES = frozenset({REGISTERED, STATUS_CHANGED})
STATES = frozenset({"ACTIVE", "FROZEN", "CLOSED", "ERASED"})
# one relay batch; bounds the transaction and the rows it locks
MAX_EVENTS = 500


@dataclass(frozen=True)
class MemberEvent:
    event_id: int
    member_id: str
    type: str
    state: str
    referred_by: str | None
    event_time: datetime


def apply_event(row: MemberRow | None, event: MemberEvent) -> MemberRow | None:
    """The member's row after `event`, or None when the event changes nothing."""
    if row is None:
        referred_by = event.referred_by if event.type == REGISTERED else None
        return MemberRow(
            event.member_id, event.state, referred_by, event.event_id, event.event_time
        )
    after = row
    if event.event_id > row.last_event_id:
        after = replace(after, state=event.state, last_event_id=event.event_id)
    if event.type == REGISTERED:
        # only a registration knows these; it may arrive after a later status change
        after = replace(
            after,
            referred_by=row.referred_by if row.referred_by is not None else event.referred_by,
            registered_at=min(row.registered_at, event.event_time),
        )
    return None if after == row else after


def _fold(row: MemberRow | None, events: Sequence[MemberEvent]) -> tuple[MemberRow | None, int]:
    """Applies one member's events in event order: the final row (None if unchanged) and
    how many events changed something."""
    start, applied = row, 0
    for event in sorted(events, key=lambda e: e.event_id):
        after = apply_event(row, event)
        if after is not None:
            row, applied = after, applied + 1
    return (row if row != start else None), applied


def _validate(events: Sequence[MemberEvent]) -> None:
    v = ViolationCollector()
    if not 0 < len(events) <= MAX_EVENTS:
        v.add("events", f"1 to {MAX_EVENTS} events")
    for i, event in enumerate(events[:MAX_EVENTS]):
        at = f"events[{i}]"
        if event.event_id <= 0:
            v.add(f"{at}.event_id", "must be positive")
        if not is_member_id(event.member_id):
            v.add(f"{at}.member", "must be members/{member_id}")
        if event.type not in EVENT_TYPES:
            v.add(f"{at}.type", "must be REGISTERED or STATUS_CHANGED")
        if event.state not in STATES:
            v.add(f"{at}.state", "must be ACTIVE, FROZEN, CLOSED or ERASED")
        if event.referred_by is not None and (
            event.type != REGISTERED or not is_member_id(event.referred_by)
        ):
            v.add(f"{at}.referred_by", "only on REGISTERED: members/{member_id}")
        if event.event_time.tzinfo is None:
            v.add(f"{at}.event_time", "needs a time zone")
    v.raise_if_any()


class MemberDirectory:
    """The members points knows, kept up to date by ApplyMemberEvents."""

    def __init__(
        self, pool: asyncpg.Pool, unknown_grace_s: float = unknown_members.DEFAULT_GRACE_S
    ) -> None:
        self._pool = pool
        self._unknown_grace_s = unknown_grace_s

    async def apply(self, events: Sequence[MemberEvent]) -> tuple[int, int]:
        """Applies the events in one transaction: (applied, skipped), where skipped events
        were already applied or are older than what points knows. Raises DomainError
        INVALID_ARGUMENT, writing nothing, when any event is malformed."""
        _validate(events)
        by_member: dict[str, list[MemberEvent]] = defaultdict(list)
        for event in events:
            by_member[event.member_id].append(event)

        async def work(conn: Conn) -> int:
            # rows are locked and written in member order, so concurrent calls never deadlock
            member_ids = sorted(by_member)
            current = await store.lock_members(conn, member_ids)
            changed: list[MemberRow] = []
            applied = 0
            for member_id in member_ids:
                row, count = _fold(current.get(member_id), by_member[member_id])
                applied += count
                if row is not None:
                    changed.append(row)
            if changed:
                await store.upsert_members(conn, changed)
                await unknown_store.forget(conn, [row.member_id for row in changed])
            return applied

        applied = await in_transaction(self._pool, work)
        skipped = len(events) - applied
        log.info(
            "member events applied", extra={"fields": {"applied": applied, "skipped": skipped}}
        )
        return applied, skipped

    async def refusals(self, member_ids: Sequence[str], now: datetime) -> dict[str, DomainError]:
        """What to answer writes for these members points does not know (unknown_members):
        each refusal is recorded in a transaction of its own, since the write it refuses
        rolls back. A member that arrived meanwhile gets the retryable answer."""

        async def work(conn: Conn) -> tuple[dict[str, datetime], list[str]]:
            first = await unknown_store.record_refusals(conn, member_ids, now)
            grace = self._unknown_grace_s
            late = [m for m, at in first.items() if unknown_members.past_grace(at, now, grace)]
            return first, await unknown_store.mark_given_up(conn, late, now)

        first, given_up = await in_transaction(self._pool, work)
        for member_id in given_up:
            # member ids are pseudonymous, not personal information: operators need the id
            log.warning(
                "writes for a member accounts never announced are now refused for good",
                extra={"fields": {"member_id": member_id}},
            )
        return {
            member_id: unknown_members.refusal(
                first.get(member_id, now), now, self._unknown_grace_s
            )
            for member_id in member_ids
        }

    async def refusal(self, member_id: str, now: datetime) -> DomainError:
        return (await self.refusals([member_id], now))[member_id]

    async def state_of(self, conn: Conn, member_id: str) -> MemberRecord | None:
        """The member as points knows it, read on the caller's connection (inside its
        transaction); None when accounts has not told points about the member (yet)."""
        return await store.get_member(conn, member_id)
