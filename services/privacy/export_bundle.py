"""The export bundle of ACCESS and PORTABILITY data-subject requests (PIPL Art. 45): what the
privacy service gathered about one member, as one JSON document and a CSV of the ledger.

Pure: no gRPC, no SQL. The JSON is the proto3 JSON mapping throughout (lowerCamelCase keys,
enums by name, 64-bit integers as decimal strings, times RFC 3339 UTC), every scalar field
present, keys in field-number order. MessageToDict would spend ~100 µs a transaction (a slow
machine) of a 2 s budget, so transactions, lots and holds are written as JSON text directly,
each protobuf field read once for the JSON and the CSV; the unit test proves that text equal
to MessageToDict's output.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from google.protobuf import json_format, message, timestamp_pb2
from google.protobuf.descriptor import Descriptor
from membership.accounts.v1 import accounts_pb2 as accounts_pb
from membership.points.v1 import points_pb2 as points_pb
from membership.privacy.v1 import consent_pb2 as consent_pb
from membership.privacy.v1 import data_rights_pb2 as rights_pb

FORMAT = "wallet-membership.export"
FORMAT_VERSION = 1
# bounds the bundle's memory: about 0.6 kB of JSON and 0.2 kB of CSV a transaction
MAX_TRANSACTIONS = 1_000_000

# DataRequest fields the bundle shows; the others are withheld. `correction` is personal
# information shown only to callers cleared to read it (once applied it is in the profile
# anyway); `steps` and `step_failure` are fulfilment bookkeeping with internal errors (the
# timeline says what happened in words). The unit test checks the
# two sets cover the message, so a new field needs a decision here before a member sees it.
REQUEST_FIELDS_SHOWN = frozenset({
    "name", "member", "type", "channel", "state", "purposes", "transactions", "create_time",
    "due_date", "due_time", "working_days", "deadline_provisional", "overdue", "extensions",
    "verification_method", "attestation_method", "rejection_reason", "deletion_outcome",
    "export", "explanation", "events", "update_time", "initial_working_days",
})  # fmt: skip
REQUEST_FIELDS_WITHHELD = frozenset({"correction", "steps", "step_failure"})
# left out of the timeline and extensions too: staff identities (caller subjects), which
# are not the member's information and help only someone probing the back office
_ACTOR = "actor"

CSV_COLUMNS = (
    "transaction_id", "kind", "create_time", "points", "available_points_delta",
    "pending_points_delta", "held_points_delta", "reference_type", "reference_id",
    "rule_version", "description",
)  # fmt: skip
# a spreadsheet runs a cell starting with one of these as a formula (CSV injection)
_FORMULA_STARTS = frozenset("=+-@\t\r")
_AVAILABLE, _PENDING, _HELD = "member:available", "member:pending", "member:held"
_quote = encode_basestring  # what json.dumps(ensure_ascii=False) quotes strings with


class BundleTooLarge(ValueError):
    """More transactions than MAX_TRANSACTIONS."""

    def __init__(self, transaction_count: int) -> None:
        super().__init__(f"{transaction_count} transactions; at most {MAX_TRANSACTIONS}")
        self.transaction_count = transaction_count


class ConsentAction(enum.Enum):
    GRANT = "grant"  # the values privacy.consent_records.action holds
    WITHDRAW = "withdraw"


@dataclass(frozen=True)
class ConsentHistoryEntry:
    purpose: str  # purpose code
    action: ConsentAction
    notice_version: int
    channel: consent_pb.Channel.ValueType
    time: datetime  # timezone-aware


@dataclass(frozen=True)
class BundleSources:
    member_export: accounts_pb.ExportMemberDataResponse
    ledger_pages: Sequence[points_pb.MemberLedgerExport]  # in the order fetched
    consents: Sequence[consent_pb.Consent]
    consent_history: Sequence[ConsentHistoryEntry]  # oldest first
    requests: Sequence[rights_pb.DataRequest]
    generated_at: datetime  # timezone-aware
    request_name: str  # `dataRequests/{id}`
    portable: bool  # PORTABILITY (adds the `schema` note) rather than ACCESS


@dataclass(frozen=True)
class Bundle:
    json_bytes: bytes
    ledger_csv: bytes


def build_bundle(sources: BundleSources) -> Bundle:
    """The bundle. ValueError if the sources are not all one member's; BundleTooLarge."""
    member = _checked_member(sources)
    kind = "DATA_REQUEST_TYPE_" + ("PORTABILITY" if sources.portable else "ACCESS")
    pairs = [_transaction(e) for page in sources.ledger_pages for e in page.transactions]
    sections = [
        ("format", _encoded(FORMAT)),
        ("formatVersion", _encoded(FORMAT_VERSION)),
        ("generatedAt", _encoded(_utc_text(sources.generated_at))),
        ("request", _encoded({"name": sources.request_name, "type": kind, "member": member})),
        ("member", _encoded(_member_section(sources.member_export))),
        ("consents", _encoded(_consents_section(sources))),
        ("points", _points_section(sources.ledger_pages, [text for text, _ in pairs])),
        ("dataRequests", _encoded([_data_request(r) for r in sources.requests])),
    ]
    if sources.portable:
        sections.append(("schema", _encoded(SCHEMA)))
    # top-level keys one a line: a text viewer shows the document a section at a time
    document = "".join(_object(sections, "\n")) + "\n"
    return Bundle(document.encode(), _csv_bytes([row for _, row in pairs]))


def _checked_member(sources: BundleSources) -> str:
    """The member's name; a bundle with another member's data in it would be a disclosure."""
    count = sum(len(page.transactions) for page in sources.ledger_pages)
    if count > MAX_TRANSACTIONS:
        raise BundleTooLarge(count)
    member = sources.member_export.member.name
    if not member:
        raise ValueError("member_export names no member")
    owners = {p.member for p in sources.ledger_pages} | {r.member for r in sources.requests}
    mine = member + "/consents/"
    if owners - {member} or not all(c.name.startswith(mine) for c in sources.consents):
        raise ValueError("a ledger page, consent or data request of another member")
    prefix, _, request_id = sources.request_name.partition("/")
    if prefix != "dataRequests" or not request_id or "/" in request_id:
        raise ValueError("request_name: `dataRequests/{id}`")
    return member


def _message(msg: message.Message) -> dict[str, Any]:  # for the small sections
    as_dict = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    descriptor: Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]  # upb's is alike
    return _in_field_order(as_dict, descriptor)


def _in_field_order(value: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """MessageToDict puts set fields before defaulted ones; this fixes the order."""
    ordered: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.json_name not in value:
            continue
        item = value[field.json_name]
        nested = field.message_type
        if nested is not None and not nested.GetOptions().map_entry:
            if isinstance(item, list):
                item = [_in_field_order(i, nested) for i in item]
            elif isinstance(item, dict):  # not a well-known type printed as a string
                item = _in_field_order(item, nested)
        ordered[field.json_name] = item
    return ordered


def _member_section(export: accounts_pb.ExportMemberDataResponse) -> dict[str, Any]:
    return {
        "profile": _message(export.member),  # the FULL view: in clear
        "statusHistory": [_message(c) for c in export.status_history],
        "referredMembers": list(export.referred_members),
    }


def _consents_section(sources: BundleSources) -> dict[str, Any]:
    history = [
        {
            "purpose": e.purpose,
            "action": e.action.name,
            "noticeVersion": e.notice_version,  # int32: a JSON number, as in Consent
            "channel": consent_pb.Channel.Name(e.channel),
            "time": _utc_text(e.time),
        }
        for e in sources.consent_history
    ]
    return {"current": [_message(c) for c in sources.consents], "history": history}


def _data_request(request: rights_pb.DataRequest) -> dict[str, Any]:
    shown = {f.json_name for f in request.DESCRIPTOR.fields if f.name in REQUEST_FIELDS_SHOWN}
    out = {k: v for k, v in _message(request).items() if k in shown}
    for key in ("events", "extensions"):
        out[key] = [{k: v for k, v in item.items() if k != _ACTOR} for item in out[key]]
    return out


# --- points: the high-volume messages written as JSON text --------------------------------


def _points_section(pages: Sequence[points_pb.MemberLedgerExport], texts: list[str]) -> list[str]:
    # balance, tier and restriction come with every page: the first's are as of the newest
    # transactions. Reward redemptions come on the first page; all pages' are taken.
    first = pages[0] if pages else points_pb.MemberLedgerExport()
    balance = _message(first.balance) if first.HasField("balance") else None
    tier = _message(first.tier) if first.HasField("tier") else None
    restriction = _message(first.restriction) if first.HasField("restriction") else None
    redemptions = [_message(r) for p in pages for r in p.reward_redemptions]
    return _object(
        [
            ("balance", _encoded(balance)),
            ("tier", _encoded(tier)),
            ("transactions", _lines(texts)),
            ("lots", _lines([_lot_json(lot) for p in pages for lot in p.lots])),
            ("holds", _lines([_hold_json(hold) for p in pages for hold in p.holds])),
            ("rewardRedemptions", _encoded(redemptions)),
            ("restriction", _encoded(restriction)),
        ]
    )


# several fields in one C call: reading protobuf fields is most of the cost
_TRANSACTION_FIELDS = attrgetter("name", "kind", "points", "rule_version")
_TRANSFER_FIELDS = attrgetter("from_account", "to_account", "amount", "lot_id", "rule_version")
_LOT_FIELDS = attrgetter("lot_id", "transaction_id", "state", "points", "remaining", "rule_version")
_HOLD_FIELDS = attrgetter(
    "hold_id", "state", "points", "captured_points", "rule_version", "transaction_id"
)


def _transaction(exported: points_pb.ExportedTransaction) -> tuple[str, list[object]]:
    """The transaction's JSON text and its CSV row."""
    t = exported.transaction
    name, kind, points, rule_version = _TRANSACTION_FIELDS(t)
    transfers, effect = _transfers(t)
    created = _rfc3339(t.create_time) if t.HasField("create_time") else ""
    ref_type, ref_value = (ref := t.reference).type, ref.value
    sentence = exported.sentence
    created_json = f',"createTime":"{created}"' if created else ""
    ref_json = (
        f',"reference":{{"type":{_quote(ref_type)},"value":{_quote(ref_value)}}}'
        if t.HasField("reference")
        else ""
    )
    body = (
        f'"transaction":{{"name":{_quote(name)},"kind":{_quote(kind)},"points":"{points}",'
        f'"ruleVersion":"{rule_version}"{created_json}{ref_json},"transfers":[{transfers}]}},'
        if exported.HasField("transaction")
        else ""
    )
    text = f'{{{body}"sentence":{_quote(sentence)}}}'
    row: list[object] = [
        _cell(name.rpartition("/")[2]), _cell(kind), created, points, *effect, _cell(ref_type),
        _cell(ref_value), rule_version, _cell(sentence),
    ]  # fmt: skip
    return text, row


def _transfers(t: points_pb.Transaction) -> tuple[str, tuple[int, int, int]]:
    """The transfers as JSON text; their net effect on available, pending and held points."""
    effect = {_AVAILABLE: 0, _PENDING: 0, _HELD: 0}
    parts = []
    for source, target, amount, lot_id, rule_version in map(_TRANSFER_FIELDS, t.transfers):
        if source in effect:
            effect[source] -= amount
        if target in effect:
            effect[target] += amount
        parts.append(
            f'{{"fromAccount":{_quote(source)},"toAccount":{_quote(target)},'
            f'"amount":"{amount}","lotId":"{lot_id}","ruleVersion":"{rule_version}"}}'
        )
    return ",".join(parts), (effect[_AVAILABLE], effect[_PENDING], effect[_HELD])


def _lot_json(lot: points_pb.ExportedLot) -> str:
    lot_id, transaction_id, state, points, remaining, rule_version = _LOT_FIELDS(lot)
    return (
        f'{{"lotId":"{lot_id}","transactionId":"{transaction_id}","state":{_quote(state)},'
        f'"points":"{points}","remaining":"{remaining}"'
        f"{_time_member('earnTime', lot.HasField('earn_time'), lot.earn_time)}"
        f"{_time_member('availableTime', lot.HasField('available_time'), lot.available_time)}"
        f"{_time_member('expireTime', lot.HasField('expire_time'), lot.expire_time)}"
        f',"ruleVersion":"{rule_version}"}}'
    )


def _hold_json(hold: points_pb.ExportedHold) -> str:
    hold_id, state, points, captured, rule_version, transaction_id = _HOLD_FIELDS(hold)
    return (
        f'{{"holdId":{_quote(hold_id)},"state":{_quote(state)},'
        f'"points":"{points}","capturedPoints":"{captured}"'
        f"{_time_member('expireTime', hold.HasField('expire_time'), hold.expire_time)}"
        f',"ruleVersion":"{rule_version}","transactionId":"{transaction_id}"'
        f"{_time_member('createTime', hold.HasField('create_time'), hold.create_time)}"
        f"{_time_member('closeTime', hold.HasField('close_time'), hold.close_time)}"
        f',"pointsClawedBack":"{hold.points_clawed_back}"}}'
    )


def _time_member(key: str, present: bool, ts: timestamp_pb2.Timestamp) -> str:
    """`,"key":"time"`, or nothing for an unset Timestamp (MessageToDict leaves it out)."""
    return f',"{key}":"{_rfc3339(ts)}"' if present else ""


def _encoded(value: object) -> list[str]:  # a JSON value as pieces (one) for _object
    return [json.dumps(value, ensure_ascii=False, separators=(",", ":"))]


def _lines(items: list[str]) -> list[str]:
    """A JSON array of encoded items, one a line."""
    return ["[\n", ",\n".join(items), "\n]"] if items else ["[]"]


def _object(members: Sequence[tuple[str, list[str]]], line_break: str = "") -> list[str]:
    # pieces joined once at the end: the ledger's arrays are megabytes, each copy costs

    pieces = ["{" + line_break]
    for i, (key, value) in enumerate(members):
        pieces += ("," + line_break if i else "", _quote(key), ":", *value)
    pieces.append(line_break + "}")
    return pieces


_EPOCH = date(1970, 1, 1)
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, the Timestamp's range
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
# the clock's text by table lookup: formatting it was half of a timestamp's cost
_HOUR_MINUTE = tuple(f"T{h:02d}:{m:02d}:" for h in range(24) for m in range(60))
_SECOND = tuple(f"{s:02d}" for s in range(60))


@lru_cache(maxsize=4096)
def _date_text(day: int) -> str:
    """`YYYY-MM-DD` of a day since 1970-01-01 (a ledger's times fall on few days)."""
    return (_EPOCH + timedelta(days=day)).isoformat()


def _rfc3339(ts: timestamp_pb2.Timestamp) -> str:
    """Timestamp.ToJsonString's text (0, 3, 6 or 9 fraction digits) in half its time."""
    seconds, nanos = ts.seconds, ts.nanos
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


def _utc_text(moment: datetime) -> str:
    if moment.utcoffset() is None:
        raise ValueError("a naive datetime: the bundle's times must be timezone-aware")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)  # to UTC
    return _rfc3339(ts)


def _cell(text: str) -> str:
    """A text cell a spreadsheet shows as text and never runs (OWASP CSV injection)."""
    return "'" + text if text[:1] in _FORMULA_STARTS else text


def _csv_bytes(rows: list[list[object]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180: CRLF, quotes as needed
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode()


# --- the schema note of PORTABILITY ---------------------------------------------------------

# the proto message of each part, by the descriptors' names so that they follow a rename
_SCHEMA_MESSAGES: tuple[tuple[str, type[message.Message]], ...] = (
    ("member.profile", accounts_pb.Member), ("member.statusHistory[]", accounts_pb.StatusChange),
    ("consents.current[]", consent_pb.Consent), ("points.balance", points_pb.Balance),
    ("points.tier", points_pb.ExportedTier), ("points.lots[]", points_pb.ExportedLot),
    ("points.transactions[]", points_pb.ExportedTransaction),
    ("points.holds[]", points_pb.ExportedHold),
    ("points.rewardRedemptions[]", points_pb.ExportedRewardRedemption),
    ("points.restriction", points_pb.MemberRestriction), ("dataRequests[]", rights_pb.DataRequest),
)  # fmt: skip
SCHEMA: dict[str, object] = {
    "conventions": "proto3 JSON mapping of the messages named below (lowerCamelCase keys, "
    "enums by name, 64-bit integers as decimal strings, times RFC 3339 UTC); every scalar "
    "field present; null: not recorded",
    "messages": {path: kind.DESCRIPTOR.full_name for path, kind in _SCHEMA_MESSAGES},
    "consents.history[]": "purpose, action (GRANT or WITHDRAW), noticeVersion, channel "
    "(membership.privacy.v1.Channel), time; oldest first",
    "dataRequests[]": "without correction, steps, stepFailure, and the actor of events and "
    "extensions",
    "ledgerCsv": "RFC 4180, UTF-8: one row per points.transactions[] element, same order; "
    "*_points_delta: net points into (+) or out of (-) that balance of the member; text "
    "cells starting with = + - @ tab or CR have an apostrophe prefixed",
}
