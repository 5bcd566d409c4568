"""Writes for a member points has not heard of yet.

A member registers at accounts and pays at once; the accounts outbox tells points about the
member moments later (its relay polls every 0.5 s, longer while points or accounts is
down). A settlement, refund, grant or spend that arrives in between must not be lost, and
settling never calls accounts (docs/design.md §1). So such a write is answered UNAVAILABLE
`MEMBER_UNKNOWN` with a `google.rpc.RetryInfo`: the caller retries and the write lands once
the member has arrived. Points remembers when it first refused a member id; after a grace
period (`MEMBERSHIP_POINTS_UNKNOWN_MEMBER_GRACE_S`, a day by default) the same refusal is
FAILED_PRECONDITION `MEMBER_UNKNOWN`, final: an id that accounts never announced within a
day is a wrong id, and a caller retrying it forever would never learn that. Such ids are
logged once and counted in `membership_points_unknown_members{state="given_up"}`.

Pure: no SQL, no gRPC. MemberDirectory (services/points/members.py) records the refusals.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from services.runtime.errors import DomainError, failed_precondition, unavailable

MEMBER_UNKNOWN = "MEMBER_UNKNOWN"
# the outbox relay polls every 0.5 s: a second later the member has normally arrived
RETRY_AFTER_S = 1.0
DEFAULT_GRACE_S = 86_400.0


def member_unknown() -> DomainError:
    """What domain code raises; retryable, so that a path that is not refined (see
    `refusal`) can never make a payment system drop a payment."""
    return unavailable(
        MEMBER_UNKNOWN,
        "points has not heard of this member from accounts yet; retry shortly",
        RETRY_AFTER_S,
    )


def is_member_unknown(error: DomainError | None) -> bool:
    return error is not None and error.reason == MEMBER_UNKNOWN


def past_grace(first_refused_at: datetime, now: datetime, grace_s: float) -> bool:
    return (now - first_refused_at).total_seconds() >= grace_s


def refusal(first_refused_at: datetime, now: datetime, grace_s: float) -> DomainError:
    """Retryable within the grace period after the first refusal of this member id; final
    after it."""
    if not past_grace(first_refused_at, now, grace_s):
        return member_unknown()
    hours = grace_s / 3600
    return failed_precondition(
        MEMBER_UNKNOWN,
        f"points has not heard of this member in the {hours:g} h since it was first asked"
        " about it: the member id is likely wrong",
    )


class UnknownCounts(NamedTuple):
    """Member ids points still does not know, by how points answers writes for them."""

    waiting: int  # still answered "retry"
    given_up: int  # refused for good after the grace
