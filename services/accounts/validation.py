"""Request validation for accounts: every violation at once, values never echoed."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

from services.accounts import normalise
from services.accounts.model import RESOURCE_PREFIX
from services.runtime.errors import ViolationCollector

MAX_REQUEST_ID = 128
MAX_REASON = 200
MAX_PURPOSE = 200
MEMBER_ID_MAX = 32
UPDATABLE_FIELDS = frozenset({"phone", "email", "display_name"})


def normalised(
    v: ViolationCollector, field: str, raw: str, fn: Callable[[str], str], required: bool = False
) -> str:
    if not raw.strip():
        if required:
            v.add(field, "required")
        return ""
    try:
        return fn(raw)
    except normalise.InvalidValue as exc:
        v.add(field, str(exc))
        return ""


def member_id_of(v: ViolationCollector, name: str, field: str = "name") -> str:
    member_id = name.removeprefix(RESOURCE_PREFIX)
    if (
        not name.startswith(RESOURCE_PREFIX)
        or not 0 < len(member_id) <= MEMBER_ID_MAX
        or not member_id.isalnum()
        or not member_id.isascii()
    ):
        v.add(field, "must be members/{member_id}")
        return ""
    return member_id


def request_id(v: ViolationCollector, value: str) -> None:
    v.require(value, "request_id", MAX_REQUEST_ID)
    if value and not value.isprintable():
        v.add("request_id", "must be printable")


def _has_control_characters(value: str) -> bool:
    # stored as PostgreSQL text (which cannot hold NUL) and shown in logs and audit entries
    return any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value)


def free_text(v: ViolationCollector, value: str, field: str, max_len: int) -> None:
    """A required short text such as a reason or purpose: no control characters."""
    v.require(value.strip(), field, max_len)
    if _has_control_characters(value):
        v.add(field, "must not contain control characters")


def reason(v: ViolationCollector, value: str) -> None:
    free_text(v, value, "reason", MAX_REASON)


def purpose(v: ViolationCollector, value: str) -> None:
    free_text(v, value, "purpose", MAX_PURPOSE)


def update_paths(v: ViolationCollector, paths: list[str]) -> list[str]:
    if not paths:
        v.add("update_mask", "required: name at least one of phone, email, display_name")
    unknown = [p for p in paths if p not in UPDATABLE_FIELDS]
    if unknown:
        v.add("update_mask", "only phone, email and display_name can be updated")
    return sorted(set(paths) & UPDATABLE_FIELDS)
