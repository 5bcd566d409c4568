"""Request validation for accounts: every violation at once, values never echoed.

Free text (reason, purpose) and request ids follow the rules shared by every service:
`ViolationCollector.text` and `ViolationCollector.request_id` (services.runtime.errors).
"""

from __future__ import annotations

from collections.abc import Callable

from services.accounts import normalise
from services.accounts.model import RESOURCE_PREFIX
from services.runtime.errors import ViolationCollector

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


def reason(v: ViolationCollector, value: str) -> None:
    v.text(value, "reason", MAX_REASON)


def purpose(v: ViolationCollector, value: str) -> None:
    v.text(value, "purpose", MAX_PURPOSE)


def update_paths(v: ViolationCollector, paths: list[str]) -> list[str]:
    if not paths:
        v.add("update_mask", "required: name at least one of phone, email, display_name")
    unknown = [p for p in paths if p not in UPDATABLE_FIELDS]
    if unknown:
        v.add("update_mask", "only phone, email and display_name can be updated")
    return sorted(set(paths) & UPDATABLE_FIELDS)
