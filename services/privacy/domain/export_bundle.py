"""The export bundle of ACCESS and PORTABILITY data-subject requests (PIPL Art. 45): what it
is made of, its layout (JSON written in pieces, the ledger's CSV, RFC 3339 times), and the
archive it is stored as. The document is the proto3 JSON mapping of the services' messages,
so proto_export_bundle.py writes it with these pieces.

What accounts and points exported travels here unread, as their own messages: privacy's
rules never look inside, and the bundle needs the messages themselves to write them.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring

from services.privacy.domain.consent import ConsentRecord, ConsentState
from services.privacy.domain.data_requests import RequestView


@dataclass(frozen=True)
class MemberExport:
    """accounts' answer to ExportMemberData (membership.accounts.v1.ExportMemberDataResponse)."""

    message: object


@dataclass(frozen=True)
class LedgerExport:
    """points' pages of ExportMemberLedger (membership.points.v1.MemberLedgerExport), in the
    order fetched, or the summary StreamMemberLedger starts with (its transactions, lots and
    holds arrive as text: domain/export_stream.py); none for a member points never knew."""

    pages: tuple[object, ...]


@dataclass(frozen=True)
class ExportSources:
    member_id: str
    member: MemberExport
    ledger: LedgerExport
    consents: Sequence[ConsentState]  # catalogue order
    consent_history: Sequence[ConsentRecord]  # oldest first
    requests: Sequence[RequestView]  # the member's data requests
    generated_at: datetime  # timezone-aware
    request_name: str  # `dataRequests/{id}`
    portable: bool  # PORTABILITY (adds the `schema` note) rather than ACCESS


@dataclass(frozen=True)
class Bundle:
    json_bytes: bytes
    ledger_csv: bytes


def make_archive(bundle: Bundle) -> bytes:
    """Fast deflate: the JSON and CSV shrink about tenfold even at level 1."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("bundle.json", bundle.json_bytes)
        archive.writestr("ledger.csv", bundle.ledger_csv)
    return out.getvalue()


FORMAT = "wallet-membership.export"
FORMAT_VERSION = 1
CSV_COLUMNS = (
    "transaction_id", "kind", "create_time", "points", "available_points_delta",
    "pending_points_delta", "held_points_delta", "reference_type", "reference_id",
    "rule_version", "description",
)  # fmt: skip
# a spreadsheet runs a cell starting with one of these as a formula (CSV injection)
_FORMULA_STARTS = frozenset("=+-@\t\r")
quote = encode_basestring  # what json.dumps(ensure_ascii=False) quotes strings with


class BundleTooLarge(ValueError):
    """More transactions than a bundle takes."""

    def __init__(self, transaction_count: int, limit: int) -> None:
        super().__init__(f"{transaction_count} transactions; at most {limit}")
        self.transaction_count = transaction_count


# --- JSON in pieces: joined once at the end (the ledger's arrays are megabytes) -------------

Pieces = list[str]


def encoded(value: object) -> Pieces:
    """A JSON value as pieces (one) for json_object."""
    return [json.dumps(value, ensure_ascii=False, separators=(",", ":"))]


def lines(items: list[str]) -> Pieces:
    """A JSON array of encoded items, one a line."""
    return ["[\n", ",\n".join(items), "\n]"] if items else ["[]"]


def json_object(members: Sequence[tuple[str, Pieces]], line_break: str = "") -> Pieces:
    """An object of (key, encoded value) members, in order."""
    pieces = ["{" + line_break]
    for i, (key, value) in enumerate(members):
        pieces += ("," + line_break if i else "", quote(key), ":", *value)
    pieces.append(line_break + "}")
    return pieces


# --- times ----------------------------------------------------------------------------------

_EPOCH = date(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, the Timestamp's range
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
# the clock's text by table lookup: formatting it was half of a timestamp's cost
_HOUR_MINUTE = tuple(f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECOND = tuple(f"{s:02d}" for s in range(60))


@lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    """`YYYY-MM-DD` of a day since 1970-01-01 (a ledger's times fall on few days)."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def rfc3339(seconds: int, nanos: int) -> str:
    """Timestamp.ToJsonString's text (0, 3, 6 or 9 fraction digits) in half its time."""
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        raise ValueError(f"timestamp out of range: {seconds}s {nanos}ns")
    day, second_of_day = divmod(seconds, 86_400)
    minute_of_day, second = divmod(second_of_day, 60)
    clock = _date_text(day) + _HOUR_MINUTE[minute_of_day] + _SECOND[second]
    if nanos == 0:
        return clock + "Z"
    if nanos % 1_000_000 == 0:
        return f"{clock}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{clock}.{nanos // 1_000:06d}Z"
    return f"{clock}.{nanos:09d}Z"


def utc_text(moment: datetime) -> str:
    """An aware datetime in UTC, as a Timestamp's JSON (microseconds, as the Timestamp
    FromDatetime would hold)."""
    if moment.utcoffset() is None:
        raise ValueError("a naive datetime: the bundle's times must be timezone-aware")
    since = moment - _EPOCH_UTC
    return rfc3339(since.days * 86_400 + since.seconds, since.microseconds * 1000)


# --- the ledger's CSV -----------------------------------------------------------------------


def cell(text: str) -> str:
    """A text cell a spreadsheet shows as text and never runs (OWASP CSV injection)."""
    return "'" + text if text[:1] in _FORMULA_STARTS else text


def csv_bytes(rows: list[list[object]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180: CRLF, quotes as needed
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode()
