"""The member status state machine."""

from __future__ import annotations

import enum

from services.accounts.domain import reasons
from services.runtime.errors import DomainError, failed_precondition


class Status(enum.StrEnum):
    """A member's status; the values are what accounts.members.status stores."""

    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"
    ERASED = "ERASED"


class Action(enum.StrEnum):
    FREEZE = "FREEZE"
    UNFREEZE = "UNFREEZE"
    CLOSE = "CLOSE"
    ERASE = "ERASE"


TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.ACTIVE, Action.FREEZE): Status.FROZEN,
    (Status.FROZEN, Action.UNFREEZE): Status.ACTIVE,
    (Status.ACTIVE, Action.CLOSE): Status.CLOSED,
    (Status.FROZEN, Action.CLOSE): Status.CLOSED,
    (Status.ACTIVE, Action.ERASE): Status.ERASED,
    (Status.FROZEN, Action.ERASE): Status.ERASED,
    (Status.CLOSED, Action.ERASE): Status.ERASED,
}

PROFILE_EDITABLE = frozenset({Status.ACTIVE, Status.FROZEN})

# the reason of a refusal because of the member's current status
STATUS_REASONS: dict[Status, str] = {
    Status.ACTIVE: reasons.MEMBER_ACTIVE,
    Status.FROZEN: reasons.MEMBER_FROZEN,
    Status.CLOSED: reasons.MEMBER_CLOSED,
    Status.ERASED: reasons.MEMBER_ERASED,
}


def transition(current: Status, action: Action) -> Status:
    target = TRANSITIONS.get((current, action))
    if target is None:
        raise illegal_transition(current, action)
    return target


def illegal_transition(current: Status, action: Action) -> DomainError:
    return failed_precondition(
        STATUS_REASONS[current],
        f"cannot {action.value.lower()} a member whose status is {current.value}",
    )


def require_editable(current: Status) -> None:
    if current not in PROFILE_EDITABLE:
        raise failed_precondition(
            STATUS_REASONS[current], f"the profile of a {current.value} member cannot change"
        )


def member_erased() -> DomainError:
    """The member's personal information was erased: nothing of it can be read or restored."""
    return failed_precondition(
        reasons.MEMBER_ERASED, "the member's personal information was erased"
    )
