"""The export bundle of ACCESS and PORTABILITY data-subject requests (PIPL Art. 45): what the
privacy service gathered about one member, as one JSON document and a CSV of the ledger
(its sources, layout and archive: domain/export_bundle.py).

No gRPC, no SQL: protobuf messages in, bytes out. The JSON is the proto3 JSON mapping
throughout (lowerCamelCase keys, enums by name, 64-bit integers as decimal strings, times
RFC 3339 UTC), every scalar field present, keys in field-number order. MessageToDict would
spend ~100 µs a transaction (a slow machine) of a 2 s budget, so transactions, lots and holds
are written as JSON text directly, each protobuf field read once for the JSON and the CSV;
the unit test proves that text equal to MessageToDict's output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

from google.protobuf import json_format, message, timestamp_pb2
from google.protobuf.descriptor import Descriptor
from membership.accounts.v1 import accounts_pb2 as accounts_pb
from membership.points.v1 import points_pb2 as points_pb
from membership.privacy.v1 import consent_pb2 as consent_pb
from membership.privacy.v1 import data_rights_pb2 as rights_pb

from services.privacy import proto_consent
from services.privacy.domain.consent import ConsentAction
from services.privacy.domain.export_bundle import (
    FORMAT,
    FORMAT_VERSION,
    Bundle,
    BundleTooLarge,
    ExportSources,
    Pieces,
    cell,
    csv_bytes,
    encoded,
    json_object,
    lines,
    quote,
    rfc3339,
    utc_text,
)
from services.privacy.domain.export_stream import BundleFrame
from services.privacy.proto import channel_enum
from services.privacy.proto_data_requests import request_pb

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

_AVAILABLE, _PENDING, _HELD = "member:available", "member:pending", "member:held"
M = TypeVar("M", bound=message.Message)


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


def build_bundle(sources: BundleSources) -> Bundle:
    """The bundle. ValueError if the sources are not all one member's; BundleTooLarge."""
    member = _checked_member(sources)
    pairs = [_transaction(e) for page in sources.ledger_pages for e in page.transactions]
    arrays = _Arrays(
        lines([text for text, _ in pairs]),
        lines([_lot_json(lot) for p in sources.ledger_pages for lot in p.lots]),
        lines([_hold_json(hold) for p in sources.ledger_pages for hold in p.holds]),
    )
    document = _document(sources, member, arrays)
    return Bundle(document.encode(), csv_bytes([row for _, row in pairs]))


# stand-ins for the ledger's arrays in bundle_frame's document: JSON text never holds a NUL
_MARKS = ("\x00transactions\x00", "\x00lots\x00", "\x00holds\x00")


def bundle_frame(sources: ExportSources) -> BundleFrame:
    """bundle.json around the ledger's arrays, for a bundle written while points' ledger
    stream arrives (domain/export_stream.py): `sources.ledger` holds the stream's summary
    (or nothing, for a member points never knew). Raises as build_bundle does."""
    return frame_of(_bundle_sources(sources))


def frame_of(sources: BundleSources) -> BundleFrame:
    """bundle_frame of the messages themselves; `ledger_pages`: the summary, or none."""
    member = _checked_member(sources)
    document = _document(sources, member, _Arrays(*([mark] for mark in _MARKS)))
    head, rest = document.split(_MARKS[0])
    after_transactions, rest = rest.split(_MARKS[1])
    after_lots, tail = rest.split(_MARKS[2])
    return BundleFrame(
        head=head.encode(),
        after_transactions=after_transactions.encode(),
        after_lots=after_lots.encode(),
        tail=tail.encode(),
        csv_header=csv_bytes([]),
        generated_at=sources.generated_at,
    )


@dataclass(frozen=True)
class _Arrays:
    """The ledger's three arrays in bundle.json, as pieces."""

    transactions: Pieces
    lots: Pieces
    holds: Pieces


def _document(sources: BundleSources, member: str, arrays: _Arrays) -> str:
    kind = "DATA_REQUEST_TYPE_" + ("PORTABILITY" if sources.portable else "ACCESS")
    sections = [
        ("format", encoded(FORMAT)),
        ("formatVersion", encoded(FORMAT_VERSION)),
        ("generatedAt", encoded(utc_text(sources.generated_at))),
        ("request", encoded({"name": sources.request_name, "type": kind, "member": member})),
        ("member", encoded(_member_section(sources.member_export))),
        ("consents", encoded(_consents_section(sources))),
        ("points", _points_section(sources.ledger_pages, arrays)),
        ("dataRequests", encoded([_data_request(r) for r in sources.requests])),
    ]
    if sources.portable:
        sections.append(("schema", encoded(SCHEMA)))
    # top-level keys one a line: a text viewer shows the document a section at a time
    return "".join(json_object(sections, "\n")) + "\n"


def _checked_member(sources: BundleSources) -> str:
    """The member's name; a bundle with another member's data in it would be a disclosure."""
    count = sum(len(page.transactions) for page in sources.ledger_pages)
    if count > MAX_TRANSACTIONS:
        raise BundleTooLarge(count, MAX_TRANSACTIONS)
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
            "time": utc_text(e.time),
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


def _points_section(pages: Sequence[points_pb.MemberLedgerExport], arrays: _Arrays) -> Pieces:
    # balance, tier and restriction come with every page: the first's are as of the newest
    # transactions. Reward redemptions come on the first page; all pages' are taken.
    first = pages[0] if pages else points_pb.MemberLedgerExport()
    balance = _message(first.balance) if first.HasField("balance") else None
    tier = _message(first.tier) if first.HasField("tier") else None
    restriction = _message(first.restriction) if first.HasField("restriction") else None
    redemptions = [_message(r) for p in pages for r in p.reward_redemptions]
    return json_object(
        [
            ("balance", encoded(balance)),
            ("tier", encoded(tier)),
            ("transactions", arrays.transactions),
            ("lots", arrays.lots),
            ("holds", arrays.holds),
            ("rewardRedemptions", encoded(redemptions)),
            ("restriction", encoded(restriction)),
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
    created = ""
    if t.HasField("create_time"):
        created = rfc3339((ts := t.create_time).seconds, ts.nanos)
    ref_type, ref_value = (ref := t.reference).type, ref.value
    sentence = exported.sentence
    created_json = f',"createTime":"{created}"' if created else ""
    ref_json = (
        f',"reference":{{"type":{quote(ref_type)},"value":{quote(ref_value)}}}'
        if t.HasField("reference")
        else ""
    )
    body = (
        f'"transaction":{{"name":{quote(name)},"kind":{quote(kind)},"points":"{points}",'
        f'"ruleVersion":"{rule_version}"{created_json}{ref_json},"transfers":[{transfers}]}},'
        if exported.HasField("transaction")
        else ""
    )
    text = f'{{{body}"sentence":{quote(sentence)}}}'
    row: list[object] = [
        cell(name.rpartition("/")[2]), cell(kind), created, points, *effect, cell(ref_type),
        cell(ref_value), rule_version, cell(sentence),
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
            f'{{"fromAccount":{quote(source)},"toAccount":{quote(target)},'
            f'"amount":"{amount}","lotId":"{lot_id}","ruleVersion":"{rule_version}"}}'
        )
    return ",".join(parts), (effect[_AVAILABLE], effect[_PENDING], effect[_HELD])


def _lot_json(lot: points_pb.ExportedLot) -> str:
    lot_id, transaction_id, state, points, remaining, rule_version = _LOT_FIELDS(lot)
    return (
        f'{{"lotId":"{lot_id}","transactionId":"{transaction_id}","state":{quote(state)},'
        f'"points":"{points}","remaining":"{remaining}"'
        f"{_time_member('earnTime', lot.HasField('earn_time'), lot.earn_time)}"
        f"{_time_member('availableTime', lot.HasField('available_time'), lot.available_time)}"
        f"{_time_member('expireTime', lot.HasField('expire_time'), lot.expire_time)}"
        f',"ruleVersion":"{rule_version}"}}'
    )


def _hold_json(hold: points_pb.ExportedHold) -> str:
    hold_id, state, points, captured, rule_version, transaction_id = _HOLD_FIELDS(hold)
    return (
        f'{{"holdId":{quote(hold_id)},"state":{quote(state)},'
        f'"points":"{points}","capturedPoints":"{captured}"'
        f"{_time_member('expireTime', hold.HasField('expire_time'), hold.expire_time)}"
        f',"ruleVersion":"{rule_version}","transactionId":"{transaction_id}"'
        f"{_time_member('createTime', hold.HasField('create_time'), hold.create_time)}"
        f"{_time_member('closeTime', hold.HasField('close_time'), hold.close_time)}"
        f',"pointsClawedBack":"{hold.points_clawed_back}"}}'
    )


def _time_member(key: str, present: bool, ts: timestamp_pb2.Timestamp) -> str:
    """`,"key":"time"`, or nothing for an unset Timestamp (MessageToDict leaves it out)."""
    return f',"{key}":"{rfc3339(ts.seconds, ts.nanos)}"' if present else ""


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


# --- from what the fulfilment step gathered --------------------------------------------------


def _opened(kind: type[M], exported: object) -> M:
    """What another service exported, as the message it is (domain/export_bundle.py)."""
    if not isinstance(exported, kind):
        raise TypeError(f"expected {kind.DESCRIPTOR.full_name}, got {type(exported).__name__}")
    return exported


def _bundle_sources(sources: ExportSources) -> BundleSources:
    member = _opened(accounts_pb.ExportMemberDataResponse, sources.member.message)
    pages = [_opened(points_pb.MemberLedgerExport, p) for p in sources.ledger.pages]
    history = [
        ConsentHistoryEntry(
            r.purpose_code, r.action, r.notice_version, channel_enum(r.channel), r.recorded_at
        )
        for r in sources.consent_history
    ]
    return BundleSources(
        member_export=member,
        ledger_pages=pages,
        consents=[proto_consent.consent_pb(sources.member_id, s) for s in sources.consents],
        consent_history=history,
        requests=[request_pb(view, with_timeline=False) for view in sources.requests],
        generated_at=sources.generated_at,
        request_name=sources.request_name,
        portable=sources.portable,
    )
