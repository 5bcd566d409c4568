"""The export bundle of ACCESS / PORTABILITY requests: sections, the direct JSON mapping of
the ledger's messages against MessageToDict, the CSV, determinism and bounds."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as ppb
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import data_rights_pb2 as rpb

from services.privacy import proto_export_bundle as export_bundle
from services.privacy.domain.consent import ConsentAction
from services.privacy.domain.export_bundle import CSV_COLUMNS, Bundle, BundleTooLarge
from services.privacy.proto_export_bundle import (
    REQUEST_FIELDS_SHOWN,
    REQUEST_FIELDS_WITHHELD,
    BundleSources,
    ConsentHistoryEntry,
    build_bundle,
)

MEMBER = "members/m0123456789abcdefghj"
OTHER = "members/m9999999999abcdefghj"
GENERATED = datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=8)))
CORRECTION_PHONE = "+8613911112222"  # asked for in a CORRECTION: never in the bundle
M = TypeVar("M", bound=Message)
ACCESS = rpb.DATA_REQUEST_TYPE_ACCESS
# quotes, backslash, comma, line breaks, a control character, CJK, U+2028 and an emoji
AWKWARD = 'say "hi", \\ then\r\nnew line\t\x01 积分 \u2028 😀'


# --- fully populated messages, field by field from the descriptors ----------------------


def _descriptor(msg: Message) -> Descriptor:
    descriptor: Descriptor = msg.DESCRIPTOR  # type: ignore[assignment]  # upb's is alike
    return descriptor


def _fill(msg: M, seed: int, seconds: int = 1_767_225_600, nanos: int = 0) -> M:
    """Sets every field of `msg` (and of its messages) to a value of its type, so a field
    added to the proto is set here too and must appear in the bundle."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        timestamp: Any = msg
        timestamp.seconds, timestamp.nanos = seconds + seed, nanos
        return msg
    for field in _descriptor(msg).fields:
        if field.message_type is not None:
            target = getattr(msg, field.name)
            for n in range(2 if field.is_repeated else 1):
                nested = target.add() if field.is_repeated else target
                _fill(nested, seed + n, seconds, nanos)
        elif field.is_repeated:
            getattr(msg, field.name).extend([_scalar(field, seed), _scalar(field, seed + 1)])
        else:
            setattr(msg, field.name, _scalar(field, seed))
    return msg


def _scalar(field: FieldDescriptor, seed: int) -> Any:
    if field.type == FieldDescriptor.TYPE_STRING:
        return f"{field.name}-{seed} {AWKWARD}"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return field.enum_type.values[-1].number
    if field.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return (-1) ** seed * (2**62 + seed)  # beyond a double's exact integers
    if field.type == FieldDescriptor.TYPE_INT32:
        return -(2**31) + seed
    raise AssertionError(f"no sample value for {field.full_name} (type {field.type})")


def _unset_fields(msg: Message) -> list[str]:
    if msg.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        return []  # a zero `nanos` is a value: the TIMES cases cover the fraction's forms
    missing = [f.full_name for f in _descriptor(msg).fields if f.name not in _set_names(msg)]
    for field, value in msg.ListFields():
        if field.message_type is not None:
            for nested in value if field.is_repeated else [value]:
                missing += _unset_fields(nested)
    return missing


def _set_names(msg: Message) -> set[str]:
    return {field.name for field, _ in msg.ListFields()}


# --- sources -------------------------------------------------------------------------------


def _transaction(
    n: int, sentence: str = "支付获得积分", ref_value: str = "pay-1"
) -> ppb.ExportedTransaction:
    exported = ppb.ExportedTransaction(sentence=sentence)
    t = exported.transaction
    t.name, t.kind, t.points, t.rule_version = f"{MEMBER}/transactions/{n}", "refund", -120, 4
    t.create_time.FromSeconds(1_767_225_600 + n)
    t.reference.type, t.reference.value = "refund_id", ref_value
    t.transfers.add(from_account="member:available", to_account="program:issued", amount=100)
    t.transfers.add(from_account="member:pending", to_account="program:issued", amount=20)
    return exported


def _page(first: int, count: int, balance: int) -> ppb.MemberLedgerExport:
    page = ppb.MemberLedgerExport(member=MEMBER, next_page_token="t")
    page.balance.name, page.balance.available = MEMBER + "/balance", balance
    page.tier.tier_code = "silver"
    page.transactions.extend(_transaction(first + i) for i in range(count))
    page.lots.add(lot_id=first, transaction_id=first, state="AVAILABLE", points=5)
    page.holds.add(hold_id=f"order-{first}", state="HELD", points=3)
    page.reward_redemptions.add(sku=f"sku-{first}", units=1)
    page.restriction.member, page.restriction.legal_basis = MEMBER, "accounting law"
    return page


def _request(
    name: str, kind: rpb.DataRequestType.ValueType, member: str = MEMBER
) -> rpb.DataRequest:
    request = rpb.DataRequest(name=name, member=member, type=kind, channel=cpb.CHANNEL_APP)
    request.correction.phone = CORRECTION_PHONE
    request.steps.add(step="accounts.erase", last_error="UNAVAILABLE")
    request.events.add(action="created", actor="staff-7:officer", note="ok")
    request.extensions.add(extra_working_days=5, reason="volume", actor="staff-7:officer")
    return request


def _sources(
    portable: bool = False, pages: list[ppb.MemberLedgerExport] | None = None
) -> BundleSources:
    member = apb.Member(name=MEMBER, phone="+8613800138000", email="zhang.san@example.cn")
    member.display_name, member.status = "张三", apb.MEMBER_STATUS_ACTIVE
    export = apb.ExportMemberDataResponse(member=member, referred_members=[OTHER])
    export.status_history.add(to_status=apb.MEMBER_STATUS_ACTIVE, reason="registered")
    history = [
        ConsentHistoryEntry(
            "marketing", ConsentAction.GRANT, 2, cpb.CHANNEL_WEB, GENERATED - timedelta(days=9)
        ),
        ConsentHistoryEntry("marketing", ConsentAction.WITHDRAW, 2, cpb.CHANNEL_APP, GENERATED),
    ]
    consent = cpb.Consent(name=MEMBER + "/consents/marketing", purpose="marketing")
    consent.status = cpb.CONSENT_STATUS_WITHDRAWN
    return BundleSources(
        member_export=export,
        ledger_pages=[_page(1, 3, 700), _page(4, 2, 650)] if pages is None else pages,
        consents=[consent],
        consent_history=history,
        requests=[_request("dataRequests/r0", rpb.DATA_REQUEST_TYPE_CORRECTION)],
        generated_at=GENERATED,
        request_name="dataRequests/r1",
        portable=portable,
    )


def _document(bundle: Bundle) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(bundle.json_bytes.decode("utf-8"))
    return doc


def _csv_rows(bundle: Bundle) -> list[list[str]]:
    return list(csv.reader(io.StringIO(bundle.ledger_csv.decode("utf-8"), newline="")))


def _as_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


# --- the document ---------------------------------------------------------------------------


def test_every_section_present() -> None:
    doc = _document(build_bundle(_sources()))
    assert list(doc) == [
        "format", "formatVersion", "generatedAt", "request", "member", "consents", "points",
        "dataRequests",
    ]  # fmt: skip
    assert doc["format"] == "wallet-membership.export" and doc["formatVersion"] == 1
    assert doc["generatedAt"] == "2026-05-01T04:00:00.250Z"  # in UTC
    assert doc["request"] == {
        "name": "dataRequests/r1", "type": "DATA_REQUEST_TYPE_ACCESS", "member": MEMBER,
    }  # fmt: skip
    assert list(doc["member"]) == ["profile", "statusHistory", "referredMembers"]
    assert doc["member"]["statusHistory"][0]["toStatus"] == "MEMBER_STATUS_ACTIVE"
    assert doc["member"]["referredMembers"] == [OTHER]
    assert doc["consents"]["current"][0]["status"] == "CONSENT_STATUS_WITHDRAWN"
    assert doc["consents"]["history"] == [
        {"purpose": "marketing", "action": "GRANT", "noticeVersion": 2,
         "channel": "CHANNEL_WEB", "time": "2026-04-22T04:00:00.250Z"},
        {"purpose": "marketing", "action": "WITHDRAW", "noticeVersion": 2,
         "channel": "CHANNEL_APP", "time": "2026-05-01T04:00:00.250Z"},
    ]  # fmt: skip
    points = doc["points"]
    assert list(points) == [
        "balance", "tier", "transactions", "lots", "holds", "rewardRedemptions", "restriction",
    ]  # fmt: skip
    assert points["balance"]["available"] == "700"  # the first page's: int64 as a string
    assert points["tier"]["tierCode"] == "silver"
    assert points["restriction"]["legalBasis"] == "accounting law"
    assert [len(points[k]) for k in ("transactions", "lots", "holds")] == [5, 2, 2]
    assert [r["sku"] for r in points["rewardRedemptions"]] == ["sku-1", "sku-4"]
    assert [r["name"] for r in doc["dataRequests"]] == ["dataRequests/r0"]


def test_profile_in_clear_and_utf8_not_escaped() -> None:
    bundle = build_bundle(_sources())
    profile = _document(bundle)["member"]["profile"]
    assert profile["phone"] == "+8613800138000"
    assert profile["email"] == "zhang.san@example.cn"
    assert profile["displayName"] == "张三"
    assert "张三".encode() in bundle.json_bytes  # ensure_ascii=False: readable as is


def test_a_member_without_a_ledger_has_empty_points() -> None:
    points = _document(build_bundle(_sources(pages=[])))["points"]
    assert points == {
        "balance": None, "tier": None, "transactions": [], "lots": [], "holds": [],
        "rewardRedemptions": [], "restriction": None,
    }  # fmt: skip
    assert _csv_rows(build_bundle(_sources(pages=[]))) == [list(CSV_COLUMNS)]


def test_data_requests_leave_out_correction_steps_and_actors() -> None:
    bundle = build_bundle(_sources())
    request = _document(bundle)["dataRequests"][0]
    assert "correction" not in request and "steps" not in request
    assert request["events"] == [
        {"state": "DATA_REQUEST_STATE_UNSPECIFIED", "action": "created", "note": "ok"}
    ]
    assert "actor" not in request["extensions"][0]
    assert CORRECTION_PHONE.encode() not in bundle.json_bytes
    assert b"staff-7" not in bundle.json_bytes and b"UNAVAILABLE" not in bundle.json_bytes


def test_every_data_request_field_is_shown_or_withheld() -> None:
    fields = set(rpb.DataRequest.DESCRIPTOR.fields_by_name)
    assert fields == REQUEST_FIELDS_SHOWN | REQUEST_FIELDS_WITHHELD
    assert not REQUEST_FIELDS_SHOWN & REQUEST_FIELDS_WITHHELD


def test_portability_is_access_plus_a_schema_note() -> None:
    access = build_bundle(_sources(portable=False))
    portability = build_bundle(_sources(portable=True))
    doc = _document(portability)
    schema = doc.pop("schema")
    doc["request"]["type"] = "DATA_REQUEST_TYPE_ACCESS"
    assert doc == _document(access)
    assert portability.ledger_csv == access.ledger_csv
    kind = _document(portability)["request"]["type"]
    assert rpb.DataRequestType.Value(kind) == rpb.DATA_REQUEST_TYPE_PORTABILITY
    for name in schema["messages"].values():  # names a reader can look the protos up by
        descriptor_pool.Default().FindMessageTypeByName(name)


def test_same_input_same_bytes() -> None:
    first, second = build_bundle(_sources(True)), build_bundle(_sources(True))
    assert first == second
    json.loads(first.json_bytes)  # and valid JSON


def test_small_sections_keys_in_field_order_whatever_is_set() -> None:
    # MessageToDict gives name, stale, separateConsent, then the fields left at defaults
    consent = cpb.Consent(name=MEMBER + "/consents/x", stale=True, separate_consent=True)
    current = _document(build_bundle(_with(consents=[consent])))["consents"]["current"][0]
    fields = [f.json_name for f in cpb.Consent.DESCRIPTOR.fields]
    assert list(current) == [name for name in fields if name != "updateTime"]  # unset


# --- the direct mapping of the ledger's messages equals MessageToDict -------------------

TIMES = [
    (1_767_225_600, 0),  # whole seconds: no fraction
    (1_767_225_600, 123_000_000),  # 3 digits
    (1_767_225_600, 123_456_000),  # 6 digits
    (1_767_225_600, 123_456_789),  # 9 digits
    # a message's times are these seconds plus its seed (1 or 2):
    (-62_135_596_800 - 1, 0),  # from 0001-01-01T00:00:00Z, the earliest Timestamp
    (253_402_300_799 - 2, 999_999_999),  # to 9999-12-31T23:59:59.999999999Z, the latest
    (-1_000_000_000, 1),  # before 1970
]


def _ledger_of(
    transaction: ppb.ExportedTransaction, lot: ppb.ExportedLot, hold: ppb.ExportedHold
) -> Any:
    page = ppb.MemberLedgerExport(member=MEMBER)
    page.transactions.append(transaction)
    page.lots.append(lot)
    page.holds.append(hold)
    return _document(build_bundle(_sources(pages=[page])))["points"]


@pytest.mark.parametrize(("seconds", "nanos"), TIMES)
def test_direct_mapping_equals_message_to_dict(seconds: int, nanos: int) -> None:
    transaction = _fill(ppb.ExportedTransaction(), 1, seconds, nanos)
    lot = _fill(ppb.ExportedLot(), 2, seconds, nanos)
    hold = _fill(ppb.ExportedHold(), 1, seconds, nanos)
    messages: list[Message] = [transaction, lot, hold]
    assert [_unset_fields(m) for m in messages] == [[], [], []]
    points = _ledger_of(transaction, lot, hold)
    mapped = [points["transactions"][0], points["lots"][0], points["holds"][0]]
    for msg, as_json in zip(messages, mapped, strict=True):
        assert as_json == _as_dict(msg)
        _assert_every_field_in_order(as_json, _descriptor(msg))


def test_direct_mapping_of_empty_messages_equals_message_to_dict() -> None:
    transaction, lot, hold = ppb.ExportedTransaction(), ppb.ExportedLot(), ppb.ExportedHold()
    points = _ledger_of(transaction, lot, hold)
    mapped = [points["transactions"][0], points["lots"][0], points["holds"][0]]
    assert mapped == [_as_dict(transaction), _as_dict(lot), _as_dict(hold)]


def test_a_transaction_without_its_optional_messages_equals_message_to_dict() -> None:
    exported = _fill(ppb.ExportedTransaction(), 3)
    exported.transaction.ClearField("create_time")
    exported.transaction.ClearField("reference")
    exported.transaction.ClearField("transfers")
    transaction = _ledger_of(exported, ppb.ExportedLot(), ppb.ExportedHold())["transactions"][0]
    assert transaction == _as_dict(exported)


def _assert_every_field_in_order(value: dict[str, Any], descriptor: Descriptor) -> None:
    """The keys are the message's fields, all of them, in field-number order."""
    assert list(value) == [f.json_name for f in descriptor.fields]
    for field in descriptor.fields:
        kind = field.message_type
        if kind is None or kind.full_name == "google.protobuf.Timestamp":
            continue
        for item in value[field.json_name] if field.is_repeated else [value[field.json_name]]:
            _assert_every_field_in_order(item, kind)


def test_out_of_range_timestamp_is_refused() -> None:
    lot = ppb.ExportedLot()
    lot.earn_time.seconds = 253_402_300_800  # 10000-01-01
    with pytest.raises(ValueError, match="out of range"):
        _ledger_of(ppb.ExportedTransaction(), lot, ppb.ExportedHold())


# --- the CSV --------------------------------------------------------------------------------


def test_csv_has_a_header_and_a_row_per_transaction_in_order() -> None:
    bundle = build_bundle(_sources())
    rows = _csv_rows(bundle)
    assert rows[0] == list(CSV_COLUMNS)
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]  # pages in order
    assert rows[1] == [
        "1", "refund", "2026-01-01T00:00:01Z", "-120", "-100", "-20", "0", "refund_id",
        "pay-1", "4", "支付获得积分",
    ]  # fmt: skip
    assert bundle.ledger_csv.count(b"\r\n") == 6  # RFC 4180 line breaks


def test_csv_quotes_commas_quotes_and_line_breaks() -> None:
    page = ppb.MemberLedgerExport(member=MEMBER)
    page.transactions.append(_transaction(1, sentence='a, "b"\nc'))
    bundle = build_bundle(_sources(pages=[page]))
    assert b'"a, ""b""\nc"' in bundle.ledger_csv
    assert _csv_rows(bundle)[1][-1] == 'a, "b"\nc'


@pytest.mark.parametrize("dangerous", ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_neutralises_formulas_in_text_cells(dangerous: str) -> None:
    page = ppb.MemberLedgerExport(member=MEMBER)
    page.transactions.append(_transaction(1, sentence=dangerous, ref_value=dangerous))
    row = _csv_rows(build_bundle(_sources(pages=[page])))[1]
    assert row[8] == row[10] == "'" + dangerous
    assert row[3:7] == ["-120", "-100", "-20", "0"]  # plain negative numbers stay numbers


# --- inputs refused -------------------------------------------------------------------------


def test_too_many_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_bundle, "MAX_TRANSACTIONS", 4)
    with pytest.raises(BundleTooLarge) as caught:
        build_bundle(_sources())  # 5 transactions
    assert isinstance(caught.value, ValueError) and caught.value.transaction_count == 5
    monkeypatch.setattr(export_bundle, "MAX_TRANSACTIONS", 5)
    build_bundle(_sources())


def _with(**changes: Any) -> BundleSources:
    return dataclasses.replace(_sources(), **changes)


@pytest.mark.parametrize(
    "sources",
    [
        pytest.param(lambda: _with(ledger_pages=[ppb.MemberLedgerExport(member=OTHER)]), id="page"),
        pytest.param(
            lambda: _with(consents=[cpb.Consent(name=f"{OTHER}/consents/x")]), id="consent"
        ),
        pytest.param(
            lambda: _with(requests=[_request("dataRequests/r", ACCESS, OTHER)]), id="request"
        ),
        pytest.param(lambda: _with(member_export=apb.ExportMemberDataResponse()), id="no member"),
        pytest.param(lambda: _with(request_name="members/x"), id="request name"),
        pytest.param(lambda: _with(generated_at=datetime(2026, 5, 1)), id="naive time"),
    ],
)
def test_sources_refused(sources: Any) -> None:
    with pytest.raises(ValueError):
        build_bundle(sources())


def test_generated_at_in_utc_whatever_the_zone() -> None:
    utc = _with(generated_at=GENERATED.astimezone(UTC))
    assert build_bundle(utc) == build_bundle(_sources())
