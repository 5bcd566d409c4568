"""Accounts records and request validation: snapshots of idempotency records, and the shared
validators of services.runtime.errors used for free text and request ids."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.accounts.domain import validation
from services.accounts.domain.lifecycle import Status
from services.accounts.domain.members import Member
from services.runtime.errors import DomainError

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
MEMBER = Member("m1", Status.ERASED, "", "", "", "", "", NOW, NOW)


def test_snapshot_round_trip_ignores_extra_keys() -> None:
    snapshot = MEMBER.to_snapshot() | {"removed_index_entries": 2, "later": [1]}
    assert Member.from_snapshot(snapshot) == MEMBER


def test_a_full_view_is_never_stored() -> None:
    """An explicit error, not an assert that `python -O` would strip (and then store the
    member's clear values with an idempotency key)."""
    full = MEMBER.with_clear(phone="+8613800138000", email="a@example.com", display_name="A")
    with pytest.raises(DomainError):
        full.to_snapshot()


def test_local_validators_gave_way_to_the_shared_ones() -> None:
    """ViolationCollector.text and .request_id are the one definition of these rules."""
    for name in ("free_text", "request_id", "_has_control_characters", "MAX_REQUEST_ID"):
        assert not hasattr(validation, name), name
