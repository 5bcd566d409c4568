"""Idempotency keys: a repeat with the same request returns the first result."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from services.accounts.model import Member
from services.runtime.errors import idempotency_key_reused


async def replay(
    stored: tuple[bytes, dict[str, Any]] | tuple[str, bytes, dict[str, Any]] | None,
    request_hash: bytes,
    method: str | None = None,
) -> Member | None:
    """The first result if this request was already done; raises if the key was reused."""
    if stored is None:
        return None
    if len(stored) == 3:
        stored_method, stored_hash, snapshot = stored
        if stored_method != method:
            raise idempotency_key_reused()
    else:
        stored_hash, snapshot = stored
    if stored_hash != request_hash:
        raise idempotency_key_reused()
    return Member.from_snapshot(snapshot)


def plain_request_hash(*parts: str) -> bytes:
    """Fingerprint of a request that carries no personal information."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).digest()
