"""Members as the accounts service tells points about them: registrations, referrers and
status changes, delivered at least once and in any order by accounts' outbox relay.

Each member row remembers the newest outbox event applied (`last_event_id`; accounts
numbers a member's events in the order they happened), so a redelivered or overtaken event
changes nothing. The one exception is a registration that arrives after a later status
change created the row: it still fills in the referrer and the registration time, which
only a registration carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from services.runtime.errors import DomainError, ViolationCollector, failed_precondition
from services.runtime.names import is_member_id

# one relay batch; bounds the transaction and the rows it locks
MAX_EVENTS = 500


class MemberEventType(StrEnum):
    REGISTERED = "REGISTERED"
    STATUS_CHANGED = "STATUS_CHANGED"


REGISTERED = MemberEventType.REGISTERED
STATUS_CHANGED = MemberEventType.STATUS_CHANGED
EVENT_TYPES = frozenset(MemberEventType)


class MemberState(StrEnum):
    """A member's state as the ledger acts on it: accounts' four, and RESTRICTED, which a
    RestrictMember sets whatever accounts says (store/members.EFFECTIVE_STATE)."""

    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"
    ERASED = "ERASED"
    RESTRICTED = "RESTRICTED"


ACTIVE = MemberState.ACTIVE
RESTRICTED = MemberState.RESTRICTED
# the states accounts' events carry (RESTRICTED is points' own)
STATES = frozenset(s for s in MemberState if s != RESTRICTED)

MEMBER_FROZEN = "MEMBER_FROZEN"
MEMBER_CLOSED = "MEMBER_CLOSED"
MEMBER_ERASED = "MEMBER_ERASED"
MEMBER_RESTRICTED = "MEMBER_RESTRICTED"
# the reason of a refusal because the member is not ACTIVE
NOT_ACTIVE_REASON = {
    MemberState.FROZEN: MEMBER_FROZEN,
    MemberState.CLOSED: MEMBER_CLOSED,
    MemberState.ERASED: MEMBER_ERASED,
    MemberState.RESTRICTED: MEMBER_RESTRICTED,
}


def member_not_active(state: str, cannot: str) -> DomainError:
    """A write refused because the member is not ACTIVE; `cannot` completes "a FROZEN
    member ...", e.g. "does not earn points"."""
    return failed_precondition(NOT_ACTIVE_REASON[MemberState(state)], f"a {state} member {cannot}")


@dataclass(frozen=True)
class MemberRecord:
    """What the ledger needs of a member: whether it may earn and spend, and its referrer."""

    member_id: str
    state: str  # a MemberState
    referred_by: str | None


@dataclass(frozen=True)
class MemberRow:
    """A row of points.members with what the event relay needs to apply events in order."""

    member_id: str
    state: str
    referred_by: str | None
    last_event_id: int
    registered_at: datetime

    @property
    def record(self) -> MemberRecord:
        return MemberRecord(self.member_id, self.state, self.referred_by)


class EventsApplied(NamedTuple):
    """What a delivery of events did: applied, or skipped (already applied, or older than
    what points knows)."""

    applied: int
    skipped: int


@dataclass(frozen=True)
class MemberEvent:
    event_id: int
    member_id: str
    type: str  # a MemberEventType
    state: str  # a MemberState but RESTRICTED
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


def fold(row: MemberRow | None, events: Sequence[MemberEvent]) -> tuple[MemberRow | None, int]:
    """Applies one member's events in event order: the final row (None if unchanged) and
    how many events changed something."""
    start, applied = row, 0
    for event in sorted(events, key=lambda e: e.event_id):
        after = apply_event(row, event)
        if after is not None:
            row, applied = after, applied + 1
    return (row if row != start else None), applied


def validate(events: Sequence[MemberEvent]) -> None:
    """Raises DomainError INVALID_ARGUMENT naming every malformed event."""
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
