"""Which caller may handle which service's fields."""

from __future__ import annotations

import pytest

from services.privacy.domain.policy import context_not_owned, may_handle
from services.runtime.errors import Code


@pytest.mark.parametrize(
    ("role", "service", "allowed"),
    [
        ("service:accounts", "accounts", True),
        ("service:accounts", "points", False),
        ("service:accounts", "", False),
        ("service:points", "accounts", False),
        ("service:points", "points", True),
        # privacy answers data-subject requests for every service
        ("service:privacy", "accounts", True),
        ("service:privacy", "points", True),
        # other roles are bounded by their scopes alone
        ("admin", "points", True),
        ("officer", "accounts", True),
    ],
)
def test_may_handle(role: str, service: str, allowed: bool) -> None:
    assert may_handle(role, service) is allowed


def test_one_foreign_context_denies_the_whole_batch() -> None:
    assert context_not_owned("service:accounts", ["accounts", "accounts"]) is None
    error = context_not_owned("service:accounts", ["accounts", "points"])
    assert error is not None
    assert (error.code, error.reason) == (Code.PERMISSION_DENIED, "CONTEXT_NOT_OWNED")
