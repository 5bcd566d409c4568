"""Processing pauses: privacy pushes them (a withdrawn `payment_records` consent, a
restriction request) and settlement refuses a paused member's payments, reading the pause
with the member it already locks and reads, so the settlement path never calls privacy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from services.runtime.errors import DomainError, failed_precondition

PROCESSING_RESTRICTED = "PROCESSING_RESTRICTED"


class ProcessingCause(StrEnum):
    CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"
    RESTRICTION_REQUESTED = "RESTRICTION_REQUESTED"


CAUSES = tuple(ProcessingCause)


@dataclass(frozen=True)
class ProcessingEvent:
    event_id: int  # increases per member (privacy's outbox order)
    member_id: str
    cause: str  # a ProcessingCause
    paused: bool
    event_time: datetime


def processing_restricted() -> DomainError:
    return failed_precondition(
        PROCESSING_RESTRICTED,
        "the member has withdrawn consent to, or restricted, the processing of payment records",
    )
