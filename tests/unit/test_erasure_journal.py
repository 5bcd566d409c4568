"""The erasure journal survives torn appends and skips what it cannot read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.privacy.domain.erasures import JournalEntry
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.settings import journal_path

AT = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def test_entries_come_back_in_order(tmp_path: Path) -> None:
    journal = ErasureJournal(tmp_path / "j.jsonl")
    assert journal.entries() == []
    for member in ("m1", "m2"):
        journal.record(JournalEntry(member, f"dr-{member}", AT))
    assert journal.entries() == [JournalEntry("m1", "dr-m1", AT), JournalEntry("m2", "dr-m2", AT)]
    assert (tmp_path / "j.jsonl").stat().st_mode & 0o777 == 0o600


def test_an_append_after_a_torn_line_is_not_lost(tmp_path: Path) -> None:
    journal = ErasureJournal(tmp_path / "j.jsonl")
    journal.record(JournalEntry("m1", "dr1", AT))
    with journal.path.open("ab") as f:
        f.write(b'{"member_id":"m2","data_req')  # a crash mid-append
    journal.record(JournalEntry("m2", "dr2", AT))
    journal.record(JournalEntry("m3", "dr3", AT))
    assert [e.member_id for e in journal.entries()] == ["m1", "m2", "m3"]


def test_unreadable_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(
        b'{"member_id":"m1","data_request_id":"d","erased_at":"2026-11-22T08:00:00+00:00"}\n'
        b"not json\n"
        b'{"member_id":"m2"}\n' + b"x" * 5000 + b"\n"
    )
    assert [e.member_id for e in ErasureJournal(path).entries()] == ["m1"]


def test_the_path_comes_from_the_environment_or_the_keys_folder(tmp_path: Path) -> None:
    assert journal_path({}, tmp_path) == tmp_path / "erasure-journal.jsonl"
    custom = tmp_path / "elsewhere.jsonl"
    assert journal_path({"MEMBERSHIP_ERASURE_JOURNAL": str(custom)}, tmp_path) == custom


def test_every_writers_file_in_the_folder_is_read(tmp_path: Path) -> None:
    """Privacy replicas on one shared volume each append to their own file (appends from
    several NFS clients to one file are not atomic); each reads them all at start."""
    pod_a = ErasureJournal(tmp_path / "erasure-privacy-a.jsonl")
    pod_b = ErasureJournal(tmp_path / "erasure-privacy-b.jsonl")
    pod_a.record(JournalEntry("m1", "dr1", AT))
    pod_b.record(JournalEntry("m2", "dr2", AT))
    (tmp_path / "notes.txt").write_text("not a journal\n")
    for journal in (pod_a, pod_b):
        assert {e.member_id for e in journal.entries()} == {"m1", "m2"}
    # a writer appends to its own file only
    pod_b.record(JournalEntry("m3", "dr3", AT))
    assert [e.member_id for e in ErasureJournal(pod_a.path).entries()] == ["m1", "m2", "m3"]
    assert b"m3" not in pod_a.path.read_bytes()


def test_a_single_configured_file_still_reads_the_writers_beside_it(tmp_path: Path) -> None:
    # the single-writer default (`erasure-journal.jsonl`) and any other name both see them
    ErasureJournal(tmp_path / "erasure-journal.jsonl").record(JournalEntry("m1", "dr1", AT))
    ErasureJournal(tmp_path / "erasure-pod.jsonl").record(JournalEntry("m2", "dr2", AT))
    mine = ErasureJournal(tmp_path / "custom.jsonl")
    assert mine.entries() == [JournalEntry("m1", "dr1", AT), JournalEntry("m2", "dr2", AT)]
    assert ErasureJournal(tmp_path / "absent" / "j.jsonl").entries() == []


def test_a_line_without_an_end_is_read_in_bounded_pieces(tmp_path: Path) -> None:
    path = tmp_path / "erasure-big.jsonl"
    # a corrupt file of one huge line, then a good entry: skipped, then read
    path.write_bytes(
        b"x" * 100_000
        + b'\n{"member_id":"m1","data_request_id":"d","erased_at":"2026-11-22T08:00:00+00:00"}\n'
    )
    assert [e.member_id for e in ErasureJournal(path).entries()] == ["m1"]
