"""Idempotency keys: a repeat with the same request returns the first result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.accounts.lifecycle import member_erased
from services.accounts.model import Member
from services.runtime.errors import idempotency_key_reused

# (request hash, snapshot) of a registration; (None, None) once the member was erased
RegistrationRecord = tuple[bytes | None, dict[str, Any] | None]
# (method, request hash, snapshot) of a mutation of an existing member
MemberRequestRecord = tuple[str, bytes, dict[str, Any]]


def replay_registration(stored: RegistrationRecord | None, request_hash: bytes) -> Member | None:
    """The member first registered under this request_id, None if the key is new. Raises
    on key reuse, and refuses any repeat once the member was erased (the tombstone keeps no
    hash to compare with, and the erased person must not come back)."""
    if stored is None:
        return None
    stored_hash, snapshot = stored
    if stored_hash is None or snapshot is None:
        raise member_erased()
    if stored_hash != request_hash:
        raise idempotency_key_reused()
    return Member.from_snapshot(snapshot)


def first_result(
    stored: MemberRequestRecord | None, method: str, request_hash: bytes
) -> dict[str, Any] | None:
    """The snapshot of the first result if this request was already done, None if the key is
    new; raises if the key was used by another method or with another payload."""
    if stored is None:
        return None
    stored_method, stored_hash, snapshot = stored
    if stored_method != method or stored_hash != request_hash:
        raise idempotency_key_reused()
    return snapshot


def replay(stored: MemberRequestRecord | None, method: str, request_hash: bytes) -> Member | None:
    """The member as first returned by this request, None if the key is new."""
    snapshot = first_result(stored, method, request_hash)
    return None if snapshot is None else Member.from_snapshot(snapshot)


def plain_request_hash(*parts: str) -> bytes:
    """Fingerprint of a request that carries no personal information."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()
