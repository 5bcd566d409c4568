"""Protobuf <-> domain of ListTransactions and ExplainTransaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2
from membership.points.v1 import points_pb2 as pb

from services.points.domain.transactions import Entry, Explanation, Query, validate_kinds
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

TRANSACTIONS = "/transactions/"
MAX_TXN_ID_DIGITS = 18  # below 2**63: a bigint


def transaction_name(member_id: str, txn_id: int) -> str:
    return f"{member_name(member_id)}{TRANSACTIONS}{txn_id}"


def parse_transaction_name(v: ViolationCollector, name: str) -> tuple[str, int]:
    """(member_id, txn_id) of `members/{m}/transactions/{t}`; ("", 0) after a violation."""
    member_part, sep, txn_part = name.rpartition(TRANSACTIONS)
    ok = sep and txn_part.isdigit() and txn_part.isascii()
    ok = ok and 0 < len(txn_part) <= MAX_TXN_ID_DIGITS
    if not ok:
        v.add("name", "must be members/{member_id}/transactions/{transaction_id}")
        return "", 0
    member_id = member_id_of(v, member_part, "name")
    return member_id, int(txn_part) if member_id else 0


def _when(v: ViolationCollector, message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        v.add(field, "not a valid time")
        return None


def query_of(request: pb.ListTransactionsRequest) -> Query:
    v = ViolationCollector()
    member_id = member_id_of(v, request.parent, "parent")
    start = _when(v, request, "start_time")
    end = _when(v, request, "end_time")
    if start and end and end <= start:
        v.add("end_time", "must be after start_time")
    v.raise_if_any()
    kinds = validate_kinds(list(request.kinds))
    return Query(member_id, kinds, start, end, request.page_size, request.page_token)


def transaction_pb(entry: Entry) -> pb.Transaction:
    row = entry.row
    return pb.Transaction(
        name=transaction_name(entry.member_id, row.txn_id),
        kind=row.kind,
        points=row.points,
        rule_version=row.rule_version,
        create_time=timestamp(row.created_at),
        reference=pb.TransactionReference(type=entry.reference.type, value=entry.reference.value),
        transfers=[
            pb.Transfer(
                from_account=t.from_account,
                to_account=t.to_account,
                amount=t.amount,
                lot_id=t.lot_id or 0,
                rule_version=t.rule_version,
            )
            for t in entry.transfers
        ],
    )


def _no_floats(value: Any) -> Any:
    """Integers as decimal strings: a Struct number is a double, and amounts are never
    floating point (docs/design.md §3); proto3 JSON gives int64 as strings alike."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _no_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_floats(v) for v in value]
    return value


def explanation_pb(found: Explanation) -> pb.TransactionExplanation:
    data = struct_pb2.Struct()
    data.update(_no_floats(found.data))
    return pb.TransactionExplanation(
        name=transaction_name(found.member_id, found.txn_id),
        kind=found.kind,
        points=found.points,
        rule_version=found.rule_version,
        steps=[pb.ExplanationStep(name=s.name, value=s.value, note=s.note) for s in found.steps],
        sentence=found.sentence,
        data=data,
    )
