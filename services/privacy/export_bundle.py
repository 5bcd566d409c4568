"""The export bundle of ACCESS and PORTABILITY data-subject requests (PIPL Art. 45): what the
privacy service gathered about one member, as one JSON document and a CSV of the ledger.

Pure: no gRPC, no SQL. The JSON follows the proto3 JSON mapping throughout (lowerCamelCase
keys, enum values by name, 64-bit integers as decimal strings, times RFC 3339 UTC), with every
scalar field present and keys in field-number order, so one kind of record always has the
same keys in the same order.

Speed: a member can have hundreds of thousands of ledger transactions and the whole request
has a 2 s budget. `json_format.MessageToDict` costs about 80 µs per transaction on a slow
machine, so transactions, lots and holds are written as JSON text directly (one read of each
protobuf field, which is the dominant cost, feeding both the JSON and the CSV row).
tests/unit/test_export_bundle.py proves that text equal to MessageToDict's output.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from json.encoder import encode_basestring
from operator import attrgetter
from typing import Any

from google.protobuf import json_format, message, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from membership.accounts.v1 import accounts_pb2 as accounts_pb
from membership.points.v1 import points_pb2 as points_pb
from membership.privacy.v1 import consent_pb2 as consent_pb
from membership.privacy.v1 import data_rights_pb2 as rights_pb

FORMAT = "wallet-membership.export"
FORMAT_VERSION = 1
# bounds the bundle's memory (about 0.5 kB of JSON and 0.1 kB of CSV per transaction)
MAX_TRANSACTIONS = 1_000_000

# DataRequest fields the bundle shows. The rest are withheld: `correction` holds the
# personal information the member asked to have (not necessarily the data we hold), `steps`
# is fulfilment bookkeeping with internal errors. The test checks both sets cover the
# message, so a new field needs a decision here before it can reach a member.
REQUEST_FIELDS_SHOWN = frozenset(
    {
        "name", "member", "type", "channel", "state", "purposes", "transactions",
        "create_time", "due_date", "due_time", "working_days", "deadline_provisional",
        "overdue", "extensions", "verification_method", "attestation_method",
        "rejection_reason", "deletion_outcome", "export", "explanation", "events",
        "update_time", "initial_working_days",
    }
)  # fmt: skip
REQUEST_FIELDS_WITHHELD = frozenset({"correction", "steps"})
# staff identities (caller subjects) in a request's timeline and extensions: not the
# member's information, and useful to nobody but someone probing the back office
_ACTOR = "actor"

CSV_COLUMNS = (
    "transaction_id",
    "kind",
    "create_time",
    "points",
    "available_points_delta",
    "pending_points_delta",
    "held_points_delta",
    "reference_type",
    "reference_id",
    "rule_version",
    "description",
)
# a spreadsheet runs a cell starting with one of these as a formula (CSV injection)
_FORMULA_STARTS = frozenset("=+-@\t\r")
_AVAILABLE, _PENDING, _HELD = "member:available", "member:pending", "member:held"

_quote = encode_basestring  # what json.dumps(ensure_ascii=False) uses for strings


class BundleTooLarge(ValueError):
    """More transactions than MAX_TRANSACTIONS."""

    def __init__(self, transaction_count: int) -> None:
        super().__init__(f"{transaction_count} transactions; at most {MAX_TRANSACTIONS}")
        self.transaction_count = transaction_count


class ConsentAction(enum.Enum):
    GRANT = "grant"  # values as privacy.consent_records.action stores them
    WITHDRAW = "withdraw"


@dataclass(frozen=True)
class ConsentHistoryEntry:
    purpose: str
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
    """The bundle; ValueError when the sources are not one member's, BundleTooLarge."""
    member = _checked_member(sources)
    transactions, rows = _transactions(sources.ledger_pages)
    sections = [
        ("format", _dumps(FORMAT)),
        ("formatVersion", _dumps(FORMAT_VERSION)),
        ("generatedAt", _dumps(_rfc3339(_timestamp(sources.generated_at)))),
        ("request", _dumps(_request_section(sources, member))),
        ("member", _dumps(_member_section(sources.member_export))),
        ("consents", _dumps(_consents_section(sources))),
        ("points", _points_section(sources.ledger_pages, transactions)),
        ("dataRequests", _dumps([_data_request(r) for r in sources.requests])),
    ]
    if sources.portable:
        sections.append(("schema", _dumps(SCHEMA)))
    # top-level keys one a line: a text viewer shows the document a section at a time
    document = "{\n" + ",\n".join(f"{_quote(k)}:{v}" for k, v in sections) + "\n}\n"
    return Bundle(document.encode(), _csv_bytes(rows))


# --- checks ------------------------------------------------------------------------------


def _checked_member(sources: BundleSources) -> str:
    """The member's name, once every source is known to be about that member: a bundle
    with another member's data in it would be a disclosure (PIPL Art. 10)."""
    count = sum(len(page.transactions) for page in sources.ledger_pages)
    if count > MAX_TRANSACTIONS:
        raise BundleTooLarge(count)
    member = sources.member_export.member.name
    if not member:
        raise ValueError("member_export names no member")
    owners = {p.member for p in sources.ledger_pages} | {r.member for r in sources.requests}
    if owners - {member} or any(
        not c.name.startswith(member + "/consents/") for c in sources.consents
    ):
        raise ValueError("a ledger page, consent or data request of another member")
    prefix, _, request_id = sources.request_name.partition("/")
    if prefix != "dataRequests" or not request_id or "/" in request_id:
        raise ValueError("request_name: `dataRequests/{id}`")
    return member


# --- small sections: MessageToDict, keys put in field order -----------------------------


def _message(msg: message.Message) -> dict[str, Any]:
    as_dict = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    descriptor: Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]  # upb's is the same
    return _in_field_order(as_dict, descriptor)


def _in_field_order(value: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """MessageToDict puts set fields before defaulted ones; this makes the order fixed."""
    ordered: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.json_name not in value:
            continue
        item = value[field.json_name]
        nested = _nested_message(field)
        if nested is not None and isinstance(item, list):
            item = [_in_field_order(i, nested) for i in item]
        elif nested is not None and isinstance(item, dict):  # a Timestamp prints as a string
            item = _in_field_order(item, nested)
        ordered[field.json_name] = item
    return ordered


def _nested_message(field: FieldDescriptor) -> Descriptor | None:
    kind = field.message_type
    return None if kind is None or kind.GetOptions().map_entry else kind


def _optional(msg: message.Message, present: bool) -> dict[str, Any] | None:
    return _message(msg) if present else None


def _request_section(sources: BundleSources, member: str) -> dict[str, Any]:
    kind = (
        rights_pb.DATA_REQUEST_TYPE_PORTABILITY
        if sources.portable
        else rights_pb.DATA_REQUEST_TYPE_ACCESS
    )
    return {
        "name": sources.request_name,
        "type": rights_pb.DataRequestType.Name(kind),
        "member": member,
    }


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
            "time": _rfc3339(_timestamp(e.time)),
        }
        for e in sources.consent_history
    ]
    return {"current": [_message(c) for c in sources.consents], "history": history}


def _data_request(request: rights_pb.DataRequest) -> dict[str, Any]:
    full = _message(request)
    shown = {f.json_name for f in request.DESCRIPTOR.fields if f.name in REQUEST_FIELDS_SHOWN}
    out = {k: v for k, v in full.items() if k in shown}
    for key in ("events", "extensions"):
        out[key] = [{k: v for k, v in item.items() if k != _ACTOR} for item in out[key]]
    return out


# --- points: the high-volume messages as JSON text --------------------------------------


def _points_section(pages: Sequence[points_pb.MemberLedgerExport], transactions: list[str]) -> str:
    # balance, tier and restriction come with every page; the first page's go with the
    # newest transactions, which is what the member sees as "now"
    first = pages[0] if pages else points_pb.MemberLedgerExport()
    members = [
        ("balance", _dumps(_optional(first.balance, first.HasField("balance")))),
        ("tier", _dumps(_optional(first.tier, first.HasField("tier")))),
        ("transactions", _lines(transactions)),
        ("lots", _lines([_lot_json(lot) for p in pages for lot in p.lots])),
        ("holds", _lines([_hold_json(hold) for p in pages for hold in p.holds])),
        # first page only by contract; every page's are taken so none can be lost
        ("rewardRedemptions", _dumps([_message(r) for p in pages for r in p.reward_redemptions])),
        ("restriction", _dumps(_optional(first.restriction, first.HasField("restriction")))),
    ]
    return "{" + ",".join(f"{_quote(k)}:{v}" for k, v in members) + "}"


def _transactions(
    pages: Sequence[points_pb.MemberLedgerExport],
) -> tuple[list[str], list[list[object]]]:
    """Each transaction's JSON text and CSV row, in the pages' order (newest first)."""
    texts: list[str] = []
    rows: list[list[object]] = []
    for page in pages:
        for exported in page.transactions:
            text, row = _transaction(exported)
            texts.append(text)
            rows.append(row)
    return texts, rows


# several fields in one C call: reading a protobuf field is the main cost here
_TRANSACTION_FIELDS = attrgetter("name", "kind", "points", "rule_version")
_TRANSFER_FIELDS = attrgetter("from_account", "to_account", "amount", "lot_id", "rule_version")
_LOT_FIELDS = attrgetter("lot_id", "transaction_id", "state", "points", "remaining")
_HOLD_FIELDS = attrgetter("hold_id", "state", "points", "captured_points")


def _transaction(exported: points_pb.ExportedTransaction) -> tuple[str, list[object]]:
    t = exported.transaction
    name, kind, points, rule_version = _TRANSACTION_FIELDS(t)
    transfers, effect = _transfers(t)
    created = _rfc3339(t.create_time) if t.HasField("create_time") else ""
    ref_type, ref_value = (ref := t.reference).type, ref.value
    sentence = exported.sentence
    text = (
        f'{{"name":{_quote(name)},"kind":{_quote(kind)},"points":"{points}",'
        f'"ruleVersion":"{rule_version}"'
        + (f',"createTime":"{created}"' if created else "")
        + (
            f',"reference":{{"type":{_quote(ref_type)},"value":{_quote(ref_value)}}}'
            if t.HasField("reference")
            else ""
        )
        + f',"transfers":[{transfers}]}}'
    )
    if exported.HasField("transaction"):
        text = f'{{"transaction":{text},"sentence":{_quote(sentence)}}}'
    else:
        text = f'{{"sentence":{_quote(sentence)}}}'
    row: list[object] = [
        _cell(name.rpartition("/")[2]), _cell(kind), created, points, *effect, _cell(ref_type),
        _cell(ref_value), rule_version, _cell(sentence),
    ]  # fmt: skip
    return text, row


def _transfers(t: points_pb.Transaction) -> tuple[str, tuple[int, int, int]]:
    """The transfers as JSON text, and their net effect on the member's available, pending
    and held points."""
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
    lot_id, transaction_id, state, points, remaining = _LOT_FIELDS(lot)
    return (
        f'{{"lotId":"{lot_id}","transactionId":"{transaction_id}","state":{_quote(state)},'
        f'"points":"{points}","remaining":"{remaining}"'
        + _time_member("earnTime", lot.earn_time if lot.HasField("earn_time") else None)
        + _time_member(
            "availableTime", lot.available_time if lot.HasField("available_time") else None
        )
        + _time_member("expireTime", lot.expire_time if lot.HasField("expire_time") else None)
        + f',"ruleVersion":"{lot.rule_version}"}}'
    )


def _hold_json(hold: points_pb.ExportedHold) -> str:
    hold_id, state, points, captured_points = _HOLD_FIELDS(hold)
    return (
        f'{{"holdId":{_quote(hold_id)},"state":{_quote(state)},'
        f'"points":"{points}","capturedPoints":"{captured_points}"'
        + _time_member("expireTime", hold.expire_time if hold.HasField("expire_time") else None)
        + f',"ruleVersion":"{hold.rule_version}","transactionId":"{hold.transaction_id}"'
        + _time_member("createTime", hold.create_time if hold.HasField("create_time") else None)
        + _time_member("closeTime", hold.close_time if hold.HasField("close_time") else None)
        + "}"
    )


def _time_member(key: str, ts: timestamp_pb2.Timestamp | None) -> str:
    return "" if ts is None else f',"{key}":"{_rfc3339(ts)}"'


def _lines(items: list[str]) -> str:
    """A JSON array of encoded items, one a line."""
    return "[\n" + ",\n".join(items) + "\n]" if items else "[]"


# --- times -------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1)  # naive: isoformat() without an offset
_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z, the Timestamp's range
_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def _rfc3339(ts: timestamp_pb2.Timestamp) -> str:
    """Timestamp.ToJsonString's text (0, 3, 6 or 9 fraction digits), a third faster."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        raise ValueError(f"timestamp out of range: {seconds}s {nanos}ns")
    clock = (_EPOCH + timedelta(seconds=seconds)).isoformat()
    if nanos == 0:
        return clock + "Z"
    if nanos % 1_000_000 == 0:
        return f"{clock}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{clock}.{nanos // 1_000:06d}Z"
    return f"{clock}.{nanos:09d}Z"


def _timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    if moment.utcoffset() is None:
        raise ValueError("a naive datetime: the bundle's times must be timezone-aware")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(moment)  # converts to UTC
    return ts


# --- encoding ------------------------------------------------------------------------------


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cell(text: str) -> str:
    """A text cell a spreadsheet shows as text, never runs (OWASP CSV injection)."""
    return "'" + text if text[:1] in _FORMULA_STARTS else text


def _csv_bytes(rows: Iterable[list[object]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180: CRLF, quotes as needed
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    return buffer.getvalue().encode()


# --- the schema note of PORTABILITY --------------------------------------------------------


def _schema() -> Mapping[str, object]:
    """Where the structure is defined, for import elsewhere: the proto message of each part
    (names from the descriptors, so they follow a rename)."""
    name: dict[str, type[message.Message]] = {
        "member.profile": accounts_pb.Member,
        "member.statusHistory[]": accounts_pb.StatusChange,
        "consents.current[]": consent_pb.Consent,
        "points.balance": points_pb.Balance,
        "points.tier": points_pb.ExportedTier,
        "points.transactions[]": points_pb.ExportedTransaction,
        "points.lots[]": points_pb.ExportedLot,
        "points.holds[]": points_pb.ExportedHold,
        "points.rewardRedemptions[]": points_pb.ExportedRewardRedemption,
        "points.restriction": points_pb.MemberRestriction,
        "dataRequests[]": rights_pb.DataRequest,
    }
    return {
        "conventions": "proto3 JSON mapping: lowerCamelCase keys, enums by name, 64-bit "
        "integers as decimal strings, times RFC 3339 UTC; every scalar field present",
        "messages": {path: kind.DESCRIPTOR.full_name for path, kind in name.items()},
        "consents.history[]": "purpose, action (GRANT|WITHDRAW), noticeVersion, channel "
        "(membership.privacy.v1.Channel), time; oldest first",
        "dataRequests[]": "correction, steps and the actors of events and extensions left out",
        "ledgerCsv": "RFC 4180, UTF-8; one row per points.transactions[] element, same "
        "order; *_points_delta: net points into (+) or out of (-) that balance; text cells "
        "starting with = + - @ tab or CR are prefixed with an apostrophe",
    }


SCHEMA = _schema()
