"""Request validation for accounts: every violation at once, values never echoed.

Free text (reason, purpose) and request ids follow the rules shared by every service:
`ViolationCollector.text` and `ViolationCollector.request_id` (services.runtime.errors).
"""

from __future__ import annotations

from collections.abc import Callable

from services.accounts import normalise
from services.runtime import names
from services.runtime.errors import ViolationCollector

MAX_REASON = 200
MAX_PURPOSE = 200
MEMBER_ID_MAX = names.MAX_MEMBER_ID
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
    return names.member_id_of(v, name, field)


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
