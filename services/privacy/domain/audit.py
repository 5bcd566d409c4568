"""The tamper-evident audit chain: each entry's hash covers the previous entry's hash.

Pure: no SQL, no gRPC. What the chain can show: a changed entry (HASH_MISMATCH), a deleted
or moved one (LINK_BROKEN at the entry after the gap). What it cannot show alone: deleting the
newest entries leaves a shorter, valid chain; only a head hash recorded outside the database
and compared later (HEAD_MISMATCH) reveals that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

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
        if entry_problem(entry, prev) is not None:
            return entry.seq
        prev = entry.entry_hash
    return None


class ChainProblem(StrEnum):
    # the entry does not hash to its own entry_hash: its content (or a hash) was changed
    HASH_MISMATCH = "HASH_MISMATCH"
    # the entry is whole but does not follow the previous one: entries between them were
    # deleted, or entries were reordered
    LINK_BROKEN = "LINK_BROKEN"
    # the chain holds but does not end at the anchor recorded outside the database: its
    # newest entries were deleted (a shorter chain is still a valid chain)
    HEAD_MISMATCH = "HEAD_MISMATCH"


def entry_problem(entry: StoredEntry, expected_prev: bytes) -> ChainProblem | None:
    """What is wrong with one entry that should follow `expected_prev`.

    The entry is first checked against its own stored prev_hash, so that a changed row is
    told apart from a missing or moved one: seq plays no part (an identity column leaves
    gaps where appending transactions rolled back)."""
    if entry_hash(entry.prev_hash, entry.occurred_at, entry.event) != entry.entry_hash:
        return ChainProblem.HASH_MISMATCH
    if entry.prev_hash != expected_prev:
        return ChainProblem.LINK_BROKEN
    return None


@dataclass(frozen=True)
class ChainReport:
    entries_checked: int  # entries found intact, before the first broken one
    last_seq: int  # the last entry found intact; 0 if none
    head_hash: bytes  # its entry_hash (the hash the checked range starts from if none)
    problem: ChainProblem | None = None
    first_broken_seq: int = 0  # HASH_MISMATCH, LINK_BROKEN only

    @property
    def intact(self) -> bool:
        return self.problem is None


@dataclass
class ChainWalk:
    """Checks a chain fed in seq order, batch by batch; keeps only the last link, so a
    chain of any length is checked in constant memory."""

    head_hash: bytes  # what the next entry must follow
    entries_checked: int = 0
    last_seq: int = 0
    problem: ChainProblem | None = None
    first_broken_seq: int = 0

    def feed(self, entries: Sequence[StoredEntry]) -> bool:
        """Checks the next entries; False once a break was found (feed no more)."""
        for entry in entries:
            problem = entry_problem(entry, self.head_hash)
            if problem is not None:
                self.problem, self.first_broken_seq = problem, entry.seq
                return False
            self.head_hash, self.last_seq = entry.entry_hash, entry.seq
            self.entries_checked += 1
        return True

    def report(self, expected_head_hash: bytes | None = None) -> ChainReport:
        problem = self.problem
        anchored = expected_head_hash is not None
        if problem is None and anchored and expected_head_hash != self.head_hash:
            problem = ChainProblem.HEAD_MISMATCH
        return ChainReport(
            self.entries_checked, self.last_seq, self.head_hash, problem, self.first_broken_seq
        )


# reads up to `limit` entries after a seq, in seq order
ChainReader = Callable[[int, int], Awaitable[Sequence[StoredEntry]]]


async def verify_chain(
    read: ChainReader,
    start_hash: bytes,
    after_seq: int,
    batch_rows: int,
    expected_head_hash: bytes | None = None,
) -> ChainReport:
    """Walks the chain after `after_seq` (whose entry ends in `start_hash`) in batches of
    `batch_rows` (keyset pagination on seq), stopping at the first break."""
    walk = ChainWalk(start_hash)
    while True:
        batch = await read(after_seq, batch_rows)
        if not walk.feed(batch) or len(batch) < batch_rows:
            return walk.report(expected_head_hash)
        after_seq = batch[-1].seq


@dataclass(frozen=True)
class AuditFilter:
    """Which events ListAuditEvents returns; empty parts match everything."""

    subject_id: str = ""
    # exact, or a prefix when it ends in "." (`data_request.`)
    action: str = ""
    actor: str = ""
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive

    @property
    def action_is_prefix(self) -> bool:
        return self.action.endswith(".")

    def token_key(self) -> dict[str, str]:
        """What a page token records of the filter, so a token is only used with its own: a
        digest, because the filter itself (a 128-character actor, escaped) could push the
        token past its length limit."""
        canonical = json.dumps(
            [
                self.subject_id,
                self.action,
                self.actor,
                self.start.isoformat() if self.start else "",
                self.end.isoformat() if self.end else "",
            ],
            separators=(",", ":"),
        )
        return {"filter": hashlib.sha256(canonical.encode()).hexdigest()[:32]}


@dataclass(frozen=True)
class AuditPage:
    entries: list[StoredEntry]
    more: bool  # whether more matching events follow


@dataclass(frozen=True)
class ChainRange:
    """Which part of the chain to check: from_seq to to_seq (0: from the start, to the head),
    and the head hash recorded outside the database it must end at, if any."""

    from_seq: int
    to_seq: int
    expected_head_hash: bytes | None
