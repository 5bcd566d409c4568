"""The export bundle written while points' ledger stream arrives (StreamMemberLedger): the
ledger's text goes into the archive as it comes, compressed at once, never parsed into an
object per transaction; the bundle's files and their bytes are those of the bundle built
from pages (domain/export_bundle.py, proto_export_bundle.build_bundle).

What points sends is checked as it arrives: its sections in order (the transactions' JSON
and CSV, then lots, then holds), the CSV's header equal to the bundle's, and at the end the
counts and bytes points says it sent. A stream that breaks off or disagrees with its end is
never an archive: `IncompleteLedger`, and the export is built again later.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

# the ledger's text in one archive at most (a million transactions are ~0.8 GB): keeps each
# file under the 4 GiB a ZIP member without the ZIP64 extension holds
MAX_LEDGER_BYTES = 1024 * 1024 * 1024
BUNDLE_JSON = "bundle.json"
LEDGER_CSV = "ledger.csv"


class LedgerSection(StrEnum):
    TRANSACTIONS_JSON = "transactions_json"
    TRANSACTIONS_CSV = "transactions_csv"
    LOTS_JSON = "lots_json"
    HOLDS_JSON = "holds_json"


@dataclass(frozen=True)
class LedgerSummary:
    """The stream's first message (membership.points.v1.MemberLedgerExport without
    transactions, lots or holds), unread here like LedgerExport's pages."""

    message: object


@dataclass(frozen=True)
class LedgerText:
    section: LedgerSection
    data: bytes


@dataclass(frozen=True)
class LedgerEnd:
    transactions: int
    lots: int
    holds: int
    text_bytes: int


LedgerPiece = LedgerSummary | LedgerText | LedgerEnd


class IncompleteLedger(Exception):
    """The stream ended before its end, or its end disagrees with what arrived: worth
    another attempt, never an archive."""


@dataclass(frozen=True)
class BundleFrame:
    """bundle.json around the ledger's three arrays (proto_export_bundle.bundle_frame)."""

    head: bytes  # up to `"transactions":`
    after_transactions: bytes  # `,"lots":`
    after_lots: bytes  # `,"holds":`
    tail: bytes  # from `,"rewardRedemptions":` to the end
    csv_header: bytes
    generated_at: datetime  # the archive's file times


# --- ZIP: two members, each compressed as its bytes arrive -----------------------------------

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_VERSION = 20  # 2.0: deflate
_MADE_BY = (3 << 8) | _VERSION  # Unix, as zipfile writes on Linux
_MODE = (0o100600 & 0xFFFF) << 16  # a regular file, owner read/write (zipfile's writestr)


def _dos_time(moment: datetime) -> tuple[int, int]:
    time = (moment.hour << 11) | (moment.minute << 5) | (moment.second // 2)
    date = ((moment.year - 1980) << 9) | (moment.month << 5) | moment.day
    return time, date


class _Member:
    """One file of the archive: deflated as written (zipfile's level 1, raw deflate)."""

    def __init__(self, name: str) -> None:
        self.name = name.encode()
        self._deflate = zlib.compressobj(1, zlib.DEFLATED, -15)
        self.parts: list[bytes] = []
        self.crc = 0
        self.size = 0
        self.compressed_size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self._keep(self._deflate.compress(data))

    def close(self) -> None:
        self._keep(self._deflate.flush())

    def _keep(self, part: bytes) -> None:
        if part:
            self.parts.append(part)
            self.compressed_size += len(part)


def _archive(members: list[_Member], moment: datetime) -> bytes:
    """The ZIP of the closed members (no ZIP64: each well under 4 GiB)."""
    time, date = _dos_time(moment)
    out: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for m in members:
        fields = (_VERSION, 0, zlib.DEFLATED, time, date, m.crc, m.compressed_size, m.size)
        header = _LOCAL.pack(0x04034B50, *fields, len(m.name), 0) + m.name
        out += (header, *m.parts)
        entry = (0x02014B50, _MADE_BY, *fields, len(m.name), 0, 0, 0, 0, _MODE, offset)
        central.append(_CENTRAL.pack(*entry) + m.name)
        offset += len(header) + m.compressed_size
    directory = b"".join(central)
    count = len(members)
    end = _END.pack(0x06054B50, 0, 0, count, count, len(directory), offset, 0)
    return b"".join(out) + directory + end


# --- bundle.json's arrays from JSON lines ----------------------------------------------------


class _JsonArray:
    """A section's JSON lines (`a\\nb\\n`) as the bundle's array (`[\\na,\\nb\\n]`, or `[]`),
    written as they arrive: only the last byte is held back."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._held = b""
        self.lines = 0

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if not self._held:  # the first line
            self._write(b"[\n")
        else:
            self._write(self._held.replace(b"\n", b",\n"))
        self.lines += data.count(b"\n")
        self._write(data[:-1].replace(b"\n", b",\n"))
        self._held = data[-1:]

    def close(self) -> None:
        if not self._held:
            self._write(b"[]")
        elif self._held != b"\n":
            raise IncompleteLedger("a JSON section ends inside a line")
        else:
            self._write(b"\n]")


# the sections' order: the transactions' two (interleaved), then lots, then holds
_STAGE = {
    LedgerSection.TRANSACTIONS_JSON: 0,
    LedgerSection.TRANSACTIONS_CSV: 0,
    LedgerSection.LOTS_JSON: 1,
    LedgerSection.HOLDS_JSON: 2,
}


class BundleWriter:
    """The archive of one bundle, written while the ledger's texts arrive. CPU only (zlib
    releases the GIL): the caller runs `text` and `finish` off its event loop."""

    def __init__(self, frame: BundleFrame) -> None:
        self._frame = frame
        self._json = _Member(BUNDLE_JSON)
        self._csv = _Member(LEDGER_CSV)
        self._arrays = [_JsonArray(self._json.write) for _ in range(3)]
        self._stage = 0
        self._csv_started = False
        self._bytes = 0
        self._json.write(frame.head)

    def text(self, piece: LedgerText) -> None:
        self._bytes += len(piece.data)
        if self._bytes > MAX_LEDGER_BYTES:
            raise ValueError(f"the ledger's text is over {MAX_LEDGER_BYTES} bytes")
        stage = _STAGE[piece.section]
        if stage < self._stage:
            raise IncompleteLedger(f"{piece.section} after a later section")
        self._advance(stage)
        if piece.section is LedgerSection.TRANSACTIONS_CSV:
            self._csv_text(piece.data)
        else:
            self._arrays[stage].feed(piece.data)

    def finish(self, end: LedgerEnd | None) -> bytes:
        """The archive; `end` None for a member points never knew (no ledger at all)."""
        self._advance(3)
        if end is None:
            if self._bytes:
                raise IncompleteLedger("texts without the stream's end")
            self._csv.write(self._frame.csv_header)
        else:
            self._check(end)
        self._json.close()
        self._csv.close()
        return _archive([self._json, self._csv], self._frame.generated_at)

    def _csv_text(self, data: bytes) -> None:
        if not self._csv_started:
            if data != self._frame.csv_header:  # points' columns are not the bundle's
                raise ValueError("the ledger's CSV header differs from the bundle's")
            self._csv_started = True
        self._csv.write(data)

    def _advance(self, stage: int) -> None:
        """Closes the arrays before `stage` with what follows each in bundle.json."""
        after = (self._frame.after_transactions, self._frame.after_lots, self._frame.tail)
        while self._stage < stage:
            self._arrays[self._stage].close()
            self._json.write(after[self._stage])
            self._stage += 1

    def _check(self, end: LedgerEnd) -> None:
        got = (self._arrays[0].lines, self._arrays[1].lines, self._arrays[2].lines, self._bytes)
        if got != (end.transactions, end.lots, end.holds, end.text_bytes):
            raise IncompleteLedger("the ledger stream's end disagrees with what arrived")
        if not self._csv_started:
            raise IncompleteLedger("the ledger stream sent no CSV header")
