"""What an update of a member's profile is: its idempotency fingerprint and the lookups it
changes."""

from __future__ import annotations

import json
from collections.abc import Mapping

from services.accounts.domain.members import LookupKind


def update_canonical(member_id: str, changes: Mapping[str, str]) -> bytes:
    """The update's identity, hashed (keyed) into its idempotency fingerprint."""
    return json.dumps([member_id, sorted(changes.items())], ensure_ascii=False).encode()


def changed_lookups(changes: Mapping[str, str]) -> dict[LookupKind, str]:
    """The new values the member will be looked up by (cleared ones are not among them)."""
    return {kind: changes[kind] for kind in sorted(LookupKind) if changes.get(kind)}


def clears_email(changes: Mapping[str, str]) -> bool:
    """The update empties the email: its index entry goes."""
    return "email" in changes and not changes["email"]
