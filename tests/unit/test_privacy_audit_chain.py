"""The audit chain's checks without a database: what each kind of tampering looks like, and
the batched walk (bounded reads, gaps in seq, the head anchor)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from services.privacy.domain.audit import (
    GENESIS_HASH,
    AuditEvent,
    ChainProblem,
    StoredEntry,
    entry_hash,
    entry_problem,
    verify_chain,
)

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def chain(seqs: Sequence[int]) -> list[StoredEntry]:
    """A valid chain with the given seqs (gaps allowed, as an identity column leaves them)."""
    entries = []
    prev = GENESIS_HASH
    for i, seq in enumerate(seqs):
        at = T0 + timedelta(seconds=i)
        event = AuditEvent("svc", "service:accounts", "fields.decrypt", f"m{i}", ("a.b.c",))
        digest = entry_hash(prev, at, event)
        entries.append(StoredEntry(seq, at, event, prev, digest))
        prev = digest
    return entries


class Reader:
    """Serves a list of entries as the store does: after a seq, at most `limit`."""

    def __init__(self, entries: Sequence[StoredEntry]) -> None:
        self.entries = list(entries)
        self.limits: list[int] = []

    async def __call__(self, after_seq: int, limit: int) -> list[StoredEntry]:
        self.limits.append(limit)
        return [e for e in self.entries if e.seq > after_seq][:limit]


def test_each_kind_of_tampering_is_told_apart() -> None:
    first, second = chain([1, 2])
    assert entry_problem(first, GENESIS_HASH) is None
    altered = dataclasses.replace(second, event=dataclasses.replace(second.event, purpose="x"))
    assert entry_problem(altered, first.entry_hash) == ChainProblem.HASH_MISMATCH
    # the entry after a deleted one is whole, but follows the wrong hash
    assert entry_problem(second, GENESIS_HASH) == ChainProblem.LINK_BROKEN
    # a changed prev_hash is a change of the entry's content
    relinked = dataclasses.replace(second, prev_hash=GENESIS_HASH)
    assert entry_problem(relinked, first.entry_hash) == ChainProblem.HASH_MISMATCH


async def test_the_walk_reads_in_bounded_batches_across_seq_gaps() -> None:
    entries = chain([1, 2, 5, 6, 7, 12, 13])
    reader = Reader(entries)
    report = await verify_chain(reader, GENESIS_HASH, 0, batch_rows=3)
    assert report.intact
    assert (report.entries_checked, report.last_seq) == (7, 13)
    assert report.head_hash == entries[-1].entry_hash
    assert reader.limits == [3, 3, 3]


async def test_the_walk_stops_at_the_first_break() -> None:
    entries = chain([1, 2, 3, 4, 5])
    del entries[2]
    reader = Reader(entries)
    report = await verify_chain(reader, GENESIS_HASH, 0, batch_rows=2)
    assert (report.problem, report.first_broken_seq) == (ChainProblem.LINK_BROKEN, 4)
    assert (report.entries_checked, report.last_seq) == (2, 2)
    assert len(reader.limits) == 2


async def test_the_head_anchor() -> None:
    entries = chain([1, 2, 3])
    report = await verify_chain(Reader(entries), GENESIS_HASH, 0, 10, entries[-1].entry_hash)
    assert report.intact
    truncated = await verify_chain(Reader(entries[:2]), GENESIS_HASH, 0, 10, entries[-1].entry_hash)
    assert truncated.problem == ChainProblem.HEAD_MISMATCH
    assert truncated.first_broken_seq == 0
    empty = await verify_chain(Reader([]), GENESIS_HASH, 0, 10)
    assert (empty.intact, empty.entries_checked, empty.head_hash) == (True, 0, GENESIS_HASH)
