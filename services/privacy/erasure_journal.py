"""The erasure journal: the members erased, kept outside the database.

Restoring an older backup brings back the data keys and personal information of members
erased after it was taken. The journal is written outside PostgreSQL (so no restore rolls it
back) when a member's data key is destroyed, and the privacy service re-erases every member
it names before it serves (docs/design.md §7: "The list of erased members is re-applied after any
restore from backup").

One JSON object per line: member id (a pseudonymous id, no personal information), the data
request and the time. Appends are flushed and fsync'd before the erasure is reported done.
A torn line (a crash mid-append) is skipped; its erasure is written first (before the key is
destroyed) and again when the request resumes, and the service appends whatever erasure the
database records but the journal lacks when it starts.

Several writers (privacy replicas sharing one network volume) each append to their own file:
appends from several NFS clients to one file are not atomic, so lines could be lost. The
journal is the folder: a writer appends to its configured file only and reads every
`erasure-*.jsonl` beside it (in Kubernetes, MEMBERSHIP_ERASURE_JOURNAL names a file per pod;
settings.journal_path).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from services.privacy.domain.erasures import JournalEntry

# the other writers' files in the journal's folder (settings.JOURNAL_FILE matches too)
WRITER_FILES = "erasure-*.jsonl"
MAX_LINE_BYTES = 1024

log = logging.getLogger("membership.privacy.erasure_journal")


class ErasureJournal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, entry: JournalEntry) -> None:
        line = json.dumps(
            {
                "member_id": entry.member_id,
                "data_request_id": entry.data_request_id,
                "erased_at": entry.erased_at.isoformat(),
            },
            separators=(",", ":"),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            # after a torn append (a crash mid-line), start on a fresh line so that this
            # entry is not glued to the broken one and lost with it
            prefix = b"" if _ends_a_line(fd) else b"\n"
            os.write(fd, prefix + (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            _fsync_dir(self.path.parent)

    def files(self) -> list[Path]:
        """This writer's file, then every other writer's in its folder, by name."""
        if not self.path.parent.is_dir():
            return []
        others = sorted(p for p in self.path.parent.glob(WRITER_FILES) if p != self.path)
        return [p for p in [self.path, *others] if p.is_file()]

    def entries(self) -> list[JournalEntry]:
        """Every complete entry of every writer's file, file by file, each oldest first (a
        member may appear more than once, also in several files). Files are read whole:
        every erasure counts, however old."""
        return [entry for path in self.files() for entry in _read(path)]


def _read(path: Path) -> list[JournalEntry]:
    out: list[JournalEntry] = []
    with path.open("rb") as f:
        for number, raw in enumerate(_bounded_lines(f), start=1):
            entry = _parse(raw)
            if entry is None:
                log.warning(
                    "erasure journal line skipped",
                    extra={"fields": {"file": path.name, "line": number}},
                )
                continue
            out.append(entry)
    return out


def _bounded_lines(f: BinaryIO) -> Iterator[bytes]:
    """The file's lines, each cut at MAX_LINE_BYTES + 1 bytes: a corrupt file without line
    ends must not be read into memory whole (the cut line is too long, so it is skipped)."""
    while raw := f.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE_BYTES + 1)) and not rest.endswith(b"\n"):
                pass  # drop the rest of the over-long line
        yield raw


def _ends_a_line(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size == 0 or os.pread(fd, 1, size - 1) == b"\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(raw: bytes) -> JournalEntry | None:
    if len(raw) > MAX_LINE_BYTES or not raw.endswith(b"\n"):
        return None
    try:
        doc = json.loads(raw)
        return JournalEntry(
            str(doc["member_id"]),
            str(doc["data_request_id"]),
            datetime.fromisoformat(doc["erased_at"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
