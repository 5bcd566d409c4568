"""Processing pauses: what privacy tells points through its outbox, so that points refuses a
paused member's payments without asking privacy on the settlement path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class PauseCause(StrEnum):
    """Why processing of the member's payments pauses (privacy.outbox.cause)."""

    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"  # a withdrawn or re-granted `payment_records`
    RESTRICTION_REQUESTED = "RESTRICTION_REQUESTED"  # a RESTRICTION data request


@dataclass(frozen=True)
class PauseEvent:
    event_id: int
    member_id: str
    cause: PauseCause
    paused: bool
    created_at: datetime
