"""Idempotency keys: a repeat with the same request returns the first result."""

from __future__ import annotations

import enum
import hashlib
import json
from typing import Any, NamedTuple

from services.accounts.domain.lifecycle import Action, member_erased
from services.accounts.domain.members import Member
from services.runtime.errors import idempotency_key_reused


class Method(enum.StrEnum):
    """The mutations of an existing member that keep an idempotency record; the values are
    what accounts.member_requests.method stores (the RPCs' names)."""

    UPDATE = "UpdateMember"
    FREEZE = "FreezeMember"
    UNFREEZE = "UnfreezeMember"
    CLOSE = "CloseMember"
    ERASE = "EraseMemberData"


METHOD_OF_ACTION = {
    Action.FREEZE: Method.FREEZE,
    Action.UNFREEZE: Method.UNFREEZE,
    Action.CLOSE: Method.CLOSE,
    Action.ERASE: Method.ERASE,
}
# extra key of an erasure's idempotency record: its reply's count of removed index entries
REMOVED = "removed_index_entries"


class RegistrationRecord(NamedTuple):
    """A registration's idempotency record; both None once the member was erased (the
    tombstone keeps neither the keyed hash of the personal data nor the masked member)."""

    request_hash: bytes | None
    snapshot: dict[str, Any] | None


class MemberRequestRecord(NamedTuple):
    """The idempotency record of a mutation of an existing member, with its first result."""

    method: str
    request_hash: bytes
    snapshot: dict[str, Any]


def replay_registration(stored: RegistrationRecord | None, request_hash: bytes) -> Member | None:
    """The member first registered under this request_id, None if the key is new. Raises
    on key reuse, and refuses any repeat once the member was erased (the tombstone keeps no
    hash to compare with, and the erased person must not come back)."""
    if stored is None:
        return None
    if stored.request_hash is None or stored.snapshot is None:
        raise member_erased()
    if stored.request_hash != request_hash:
        raise idempotency_key_reused()
    return Member.from_snapshot(stored.snapshot)


def first_result(
    stored: MemberRequestRecord | None, method: Method, request_hash: bytes
) -> dict[str, Any] | None:
    """The snapshot of the first result if this request was already done, None if the key is
    new; raises if the key was used by another method or with another payload."""
    if stored is None:
        return None
    if stored.method != method or stored.request_hash != request_hash:
        raise idempotency_key_reused()
    return stored.snapshot


def replay(
    stored: MemberRequestRecord | None, method: Method, request_hash: bytes
) -> Member | None:
    """The member as first returned by this request, None if the key is new."""
    snapshot = first_result(stored, method, request_hash)
    return None if snapshot is None else Member.from_snapshot(snapshot)


def plain_request_hash(*parts: str) -> bytes:
    """Fingerprint of a request that carries no personal information."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()
