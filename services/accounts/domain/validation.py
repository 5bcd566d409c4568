"""Request validation for accounts: every violation at once, values never echoed.

Free text (reason, purpose) and request ids follow the rules shared by every service:
`ViolationCollector.text` and `ViolationCollector.request_id` (services.runtime.errors).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from services.accounts.domain import normalise
from services.accounts.domain.consents import ConsentGrant
from services.runtime import names
from services.runtime.errors import ViolationCollector

MAX_REASON = 200
MAX_PURPOSE = 200
MEMBER_ID_MAX = names.MAX_MEMBER_ID
UPDATABLE_FIELDS = frozenset({"phone", "email", "display_name"})
# consents given at sign-up: as many as privacy's GrantConsent takes in one call
MAX_CONSENTS = 16
# the syntax of privacy's purpose codes (services never import each other's code, so it is
# repeated here); whether the purpose exists is privacy's to say
PURPOSE_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def normalised(
    v: ViolationCollector,
    raw: str,
    rule: Callable[[str], str],
    *,
    field: str,
    required: bool = False,
) -> str:
    """`raw` after the normalisation `rule`, or "" after recording why not (or that it is
    missing when `required`)."""
    if not raw.strip():
        if required:
            v.add(field, "required")
        return ""
    try:
        return rule(raw)
    except normalise.InvalidValue as exc:
        v.add(field, str(exc))
        return ""


def member_id_of(v: ViolationCollector, name: str, *, field: str = "name") -> str:
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


def consents(v: ViolationCollector, grants: Sequence[ConsentGrant]) -> tuple[ConsentGrant, ...]:
    """At most 16 grants, each purpose once, versions shown > 0."""
    if len(grants) > MAX_CONSENTS:
        # one violation, not one per item: the work stays bounded whatever the caller sends
        v.add("consents", f"at most {MAX_CONSENTS} purposes")
        return ()
    seen: set[str] = set()
    for i, grant in enumerate(grants):
        purpose_code, notice_version = grant.purpose, grant.notice_version
        path = f"consents[{i}]"
        if not purpose_code:
            v.add(f"{path}.purpose", "required")
        elif not PURPOSE_CODE.fullmatch(purpose_code):
            v.add(f"{path}.purpose", "not a purpose code (lower-case letters, digits, _)")
        elif purpose_code in seen:
            v.add(f"{path}.purpose", "each purpose at most once")
        seen.add(purpose_code)
        if notice_version <= 0:
            v.add(f"{path}.notice_version", "required: the notice version shown")
    return tuple(grants)
