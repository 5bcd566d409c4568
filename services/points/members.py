"""The member directory: the members points knows, kept up to date by ApplyMemberEvents
(how an event applies is domain/members.py's), and the answer to writes for a member it
does not know yet (domain/unknown_members.py)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from services.points.domain import unknown_members
from services.points.domain.members import (
    EventsApplied,
    MemberEvent,
    MemberRecord,
    MemberRow,
    fold,
    validate,
)
from services.points.domain.settlement import ItemOutcome, Payment
from services.points.store import members as member_store
from services.points.store import unknown_members as unknown_store
from services.runtime.db import Conn, in_transaction
from services.runtime.errors import DomainError

T = TypeVar("T")

log = logging.getLogger("membership.points.members")


class MemberDirectory:
    """The members points knows, kept up to date by ApplyMemberEvents."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        unknown_grace_s: float = unknown_members.DEFAULT_GRACE_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._unknown_grace_s = unknown_grace_s
        self._clock = clock

    async def apply(self, events: Sequence[MemberEvent]) -> EventsApplied:
        """Applies the events in one transaction. Raises DomainError INVALID_ARGUMENT,
        writing nothing, when any event is malformed."""
        validate(events)
        by_member: dict[str, list[MemberEvent]] = defaultdict(list)
        for event in events:
            by_member[event.member_id].append(event)

        async def work(conn: Conn) -> int:
            # rows are locked and written in member order, so concurrent calls never deadlock
            member_ids = sorted(by_member)
            current = await member_store.lock_members(conn, member_ids)
            changed: list[MemberRow] = []
            applied = 0
            for member_id in member_ids:
                row, count = fold(current.get(member_id), by_member[member_id])
                applied += count
                if row is not None:
                    changed.append(row)
            if changed:
                await member_store.upsert_members(conn, changed)
                await unknown_store.forget(conn, [row.member_id for row in changed])
            return applied

        applied = await in_transaction(self._pool, work)
        skipped = len(events) - applied
        log.info(
            "member events applied", extra={"fields": {"applied": applied, "skipped": skipped}}
        )
        return EventsApplied(applied, skipped)

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
        return await member_store.get_member(conn, member_id)

    async def for_known_member(self, member_id: str, write: Awaitable[T]) -> T:
        """Awaits a write; a refusal because points does not know the member yet becomes
        the answer unknown_members.refusal gives (retryable, or final after the grace)."""
        try:
            return await write
        except DomainError as err:
            if not unknown_members.is_member_unknown(err):
                raise
            raise await self.refusal(member_id, self._clock()) from None

    async def refine_unknown(
        self, payments: Sequence[Payment], outcomes: Sequence[ItemOutcome]
    ) -> list[ItemOutcome]:
        """Items refused for a member points does not know get unknown_members' answer."""
        unknown = [
            p.member_id
            for p, o in zip(payments, outcomes, strict=True)
            if unknown_members.is_member_unknown(o.error)
        ]
        if not unknown:
            return list(outcomes)
        refusals = await self.refusals(unknown, self._clock())
        return [
            ItemOutcome(None, refusals[p.member_id])
            if unknown_members.is_member_unknown(o.error)
            else o
            for p, o in zip(payments, outcomes, strict=True)
        ]
