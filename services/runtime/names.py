"""Resource names shared by the services (AIP-122)."""

from __future__ import annotations

from services.runtime.errors import ViolationCollector

MEMBER_PREFIX = "members/"
MAX_MEMBER_ID = 32


def is_member_id(member_id: str) -> bool:
    return 0 < len(member_id) <= MAX_MEMBER_ID and member_id.isalnum() and member_id.isascii()


def member_id_of(v: ViolationCollector, name: str, field: str, suffix: str = "") -> str:
    """The id in `members/{member_id}{suffix}`, or "" after recording a violation."""
    wrapped = name.startswith(MEMBER_PREFIX) and name.endswith(suffix)
    member_id = name[len(MEMBER_PREFIX) : len(name) - len(suffix)] if wrapped else ""
    if not is_member_id(member_id):
        v.add(field, f"must be members/{{member_id}}{suffix}")
        return ""
    return member_id


def member_name(member_id: str) -> str:
    return MEMBER_PREFIX + member_id
