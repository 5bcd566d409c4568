"""The tamper-evident audit chain: each entry's hash covers the previous entry's hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

GENESIS_HASH = b"\x00" * 32


@dataclass(frozen=True)
class AuditEvent:
    actor: str
    actor_role: str
    action: str
    subject_id: str = ""
    fields: Sequence[str] = ()
    purpose: str = ""
    on_behalf_of: str = ""
    request_id: str = ""


def entry_hash(prev_hash: bytes, occurred_at: datetime, event: AuditEvent) -> bytes:
    canonical = json.dumps(
        {
            "occurred_at": occurred_at.isoformat(timespec="microseconds"),
            "actor": event.actor,
            "actor_role": event.actor_role,
            "on_behalf_of": event.on_behalf_of,
            "action": event.action,
            "subject_id": event.subject_id,
            "fields": list(event.fields),
            "purpose": event.purpose,
            "request_id": event.request_id,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return hashlib.sha256(prev_hash + canonical).digest()


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    occurred_at: datetime
    event: AuditEvent
    prev_hash: bytes
    entry_hash: bytes


def first_broken_link(entries: Sequence[StoredEntry], expected_prev: bytes) -> int | None:
    """Seq of the first entry whose link or hash is wrong, or None if the chain holds."""
    prev = expected_prev
    for entry in entries:
        if (
            entry.prev_hash != prev
            or entry_hash(prev, entry.occurred_at, entry.event) != entry.entry_hash
        ):
            return entry.seq
        prev = entry.entry_hash
    return None
