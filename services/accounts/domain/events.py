"""The member events accounts writes to its outbox for points: which, and what they carry."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.accounts.domain.lifecycle import Status


class EventType(enum.StrEnum):
    """accounts.outbox.event_type of the events the points relay delivers."""

    REGISTERED = "member.registered"
    STATUS_CHANGED = "member.status_changed"


@dataclass(frozen=True)
class NewEvent:
    """An event to write to the outbox, in the transaction of the change it tells of."""

    member_id: str
    event_type: EventType
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class OutboxEvent:
    """An event as the outbox holds it (the relay reads also types it does not know)."""

    event_id: int
    member_id: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime


def registered(member_id: str, *, referred_by: str | None) -> NewEvent:
    payload = {
        "member_id": member_id,
        "referred_by": referred_by or "",
        "status": Status.ACTIVE.value,
    }
    return NewEvent(member_id, EventType.REGISTERED, payload)


def status_changed(member_id: str, *, from_status: Status, to_status: Status) -> NewEvent:
    payload = {
        "member_id": member_id,
        "from_status": from_status.value,
        "to_status": to_status.value,
    }
    return NewEvent(member_id, EventType.STATUS_CHANGED, payload)
