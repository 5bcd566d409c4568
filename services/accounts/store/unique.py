"""The one error the store raises on purpose: a unique key is taken."""

from __future__ import annotations

import enum


class UniqueKey(enum.StrEnum):
    """Which unique key: a registration's request_id, or a lookup kind (phone, email)."""

    REQUEST_ID = "request_id"
    PHONE = "phone"
    EMAIL = "email"


class UniqueViolation(Exception):
    """A unique key is taken; `constraint` names which (a UniqueKey)."""

    def __init__(self, constraint: str) -> None:
        super().__init__(constraint)
        self.constraint = UniqueKey(constraint)
