"""The member status state machine: every status × every action."""

from __future__ import annotations

import itertools

import pytest

from services.accounts.domain.lifecycle import (
    TRANSITIONS,
    Action,
    Status,
    require_editable,
    transition,
)
from services.runtime.errors import Code, DomainError

A, F, C, E = Status.ACTIVE, Status.FROZEN, Status.CLOSED, Status.ERASED

# the whole table, written out independently of the code: None = illegal
EXPECTED: dict[tuple[Status, Action], Status | None] = {
    (A, Action.FREEZE): F,
    (A, Action.UNFREEZE): None,
    (A, Action.CLOSE): C,
    (A, Action.ERASE): E,
    (F, Action.FREEZE): None,
    (F, Action.UNFREEZE): A,
    (F, Action.CLOSE): C,
    (F, Action.ERASE): E,
    (C, Action.FREEZE): None,
    (C, Action.UNFREEZE): None,
    (C, Action.CLOSE): None,
    (C, Action.ERASE): E,
    (E, Action.FREEZE): None,
    (E, Action.UNFREEZE): None,
    (E, Action.CLOSE): None,
    (E, Action.ERASE): None,
}


def test_the_expected_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(Status, Action))


@pytest.mark.parametrize(("current", "action"), sorted(EXPECTED, key=str))
def test_transition(current: Status, action: Action) -> None:
    target = EXPECTED[(current, action)]
    if target is not None:
        assert transition(current, action) is target
        return
    with pytest.raises(DomainError) as caught:
        transition(current, action)
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.reason == f"MEMBER_{current.value}"
    assert not caught.value.violations


def test_no_transition_outside_the_expected_table() -> None:
    legal = {pair: target for pair, target in EXPECTED.items() if target is not None}
    assert legal == TRANSITIONS


def test_erased_and_closed_are_final() -> None:
    for action in Action:
        assert (E, action) not in TRANSITIONS
    assert [a for a in Action if (C, a) in TRANSITIONS] == [Action.ERASE]


@pytest.mark.parametrize("status", [A, F])
def test_live_profiles_are_editable(status: Status) -> None:
    require_editable(status)


@pytest.mark.parametrize("status", [C, E])
def test_closed_and_erased_profiles_are_not_editable(status: Status) -> None:
    with pytest.raises(DomainError) as caught:
        require_editable(status)
    assert caught.value.code is Code.FAILED_PRECONDITION
    assert caught.value.reason == f"MEMBER_{status.value}"
