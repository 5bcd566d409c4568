"""StreamMemberLedger, without SQL: a member's whole ledger as text PostgreSQL renders (JSON
lines and CSV), for the privacy service's access and portability bundles; what the stream
sends, in which order, and its bounds (services/points/ledger_stream.py reads it in one
snapshot, store/ledger_stream.py holds the SQL that renders it).

Why text from SQL: building a dataclass and then a protobuf per transaction cost ~78 µs
each, and privacy's JSON and CSV of them ~28 µs more; PostgreSQL renders the same text in a
fraction of that, and the bytes pass through both services untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from services.points.domain.ledger_export import ExportPage

MAX_CHUNK_BYTES = 1024 * 1024  # per message: well under gRPC's 4 MiB default limit
# transactions rendered per fetched row: ~0.8 kB each, so ~0.8 MB of text a row
ROWS_PER_FETCH = 1000
# as privacy takes in one bundle (services/privacy/proto_export_bundle.MAX_TRANSACTIONS)
MAX_TRANSACTIONS = 1_000_000
LEDGER_TOO_LARGE = "LEDGER_TOO_LARGE"

# the CSV's columns (privacy's bundle checks the header it receives against its own)
CSV_COLUMNS = (
    "transaction_id", "kind", "create_time", "points", "available_points_delta",
    "pending_points_delta", "held_points_delta", "reference_type", "reference_id",
    "rule_version", "description",
)  # fmt: skip
CSV_HEADER = (",".join(CSV_COLUMNS) + "\r\n").encode()
# a spreadsheet runs a cell starting with one of these as a formula (CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# a cell holding one of these is quoted (Python's csv.QUOTE_MINIMAL with CRLF lines)
CSV_SPECIAL = (",", '"', "\r", "\n")
# the member's own accounts whose net change the CSV shows, in its column order
MEMBER_ACCOUNTS = ("member:available", "member:pending", "member:held")


class Section(StrEnum):
    TRANSACTIONS_JSON = "transactions_json"
    TRANSACTIONS_CSV = "transactions_csv"
    LOTS_JSON = "lots_json"
    HOLDS_JSON = "holds_json"


@dataclass(frozen=True)
class Text:
    section: Section
    data: bytes  # at most MAX_CHUNK_BYTES


@dataclass(frozen=True)
class StreamEnd:
    transactions: int
    lots: int
    holds: int
    text_bytes: int


# the summary (an ExportPage with no transactions, lots or holds), then texts, then the end
StreamItem = ExportPage | Text | StreamEnd


def texts(section: Section, data: bytes) -> Iterator[Text]:
    """UTF-8 text in chunks of at most MAX_CHUNK_BYTES (a chunk may end inside a line or a
    UTF-8 sequence: the receiver joins bytes, never decodes a chunk alone)."""
    if len(data) <= MAX_CHUNK_BYTES:  # the usual fetch: sent as it came
        if data:
            yield Text(section, data)
        return
    view = memoryview(data)
    for start in range(0, len(data), MAX_CHUNK_BYTES):
        yield Text(section, bytes(view[start : start + MAX_CHUNK_BYTES]))


class Tally:
    """What the stream sent so far, for its end."""

    def __init__(self) -> None:
        self.transactions = 0
        self.lots = 0
        self.holds = 0
        self.text_bytes = 0

    def sent(self, text: Text) -> Text:
        self.text_bytes += len(text.data)
        return text

    def end(self) -> StreamEnd:
        return StreamEnd(self.transactions, self.lots, self.holds, self.text_bytes)
