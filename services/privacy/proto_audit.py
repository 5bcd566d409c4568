"""membership.privacy.v1.AuditService's messages <-> domain: the list's filter and page
tokens, the chain check's range, events and reports as messages."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from google.protobuf import timestamp_pb2
from membership.privacy.v1 import audit_pb2 as pb

from services.privacy.domain.audit import (
    AuditFilter,
    ChainProblem,
    ChainRange,
    ChainReport,
    StoredEntry,
)
from services.privacy.proto import SUBJECT_ID, SUBJECT_ID_RULE
from services.runtime import paging
from services.runtime.errors import ViolationCollector, bad_field

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
HASH_BYTES = 32
MAX_ACTOR = 128
# dotted lower-case words (`consent.grant`); a trailing dot makes it a prefix (`consent.`)
ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*\.?$")
MAX_ACTION = 64

_PROBLEMS: dict[ChainProblem | None, pb.ChainProblem.ValueType] = {
    None: pb.CHAIN_PROBLEM_UNSPECIFIED,
    ChainProblem.HASH_MISMATCH: pb.CHAIN_PROBLEM_HASH_MISMATCH,
    ChainProblem.LINK_BROKEN: pb.CHAIN_PROBLEM_LINK_BROKEN,
    ChainProblem.HEAD_MISMATCH: pb.CHAIN_PROBLEM_HEAD_MISMATCH,
}


def page_size(requested: int) -> int:
    """0 is the default; above the maximum is read as the maximum (AIP-158)."""
    if requested < 0:
        raise bad_field("page_size", "must not be negative")
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def _time(
    v: ViolationCollector,
    request: pb.ListAuditEventsRequest,
    field: Literal["start_time", "end_time"],
) -> datetime | None:
    if not request.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(request, field)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        v.add(field, "not a valid time")
        return None


def filter_of(request: pb.ListAuditEventsRequest) -> AuditFilter:
    v = ViolationCollector()
    if request.subject_id and not SUBJECT_ID.fullmatch(request.subject_id):
        v.add("subject_id", SUBJECT_ID_RULE)
    if request.action and not (
        len(request.action) <= MAX_ACTION and ACTION.fullmatch(request.action)
    ):
        v.add("action", "a dotted action such as `consent.grant`, or a prefix such as `consent.`")
    v.bound(request.actor, "actor", MAX_ACTOR)
    if not request.actor.isprintable():
        v.add("actor", "must be printable")
    start = _time(v, request, "start_time")
    end = _time(v, request, "end_time")
    if start and end and end <= start:
        v.add("end_time", "must be after start_time")
    v.raise_if_any()
    return AuditFilter(request.subject_id, request.action, request.actor, start, end)


def after_seq_of(token: str, where: AuditFilter) -> int:
    """The seq a page token resumes after; 0 for the first page."""
    position = paging.decode_token(token, where.token_key())
    if position is None:
        return 0
    seq = position.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise bad_field("page_token", "not a page token of this list")
    return seq


def next_page_token(last_seq: int, where: AuditFilter) -> str:
    return paging.encode_token({"seq": last_seq}, where.token_key())


def event_pb(entry: StoredEntry) -> pb.AuditEvent:
    event = entry.event
    message = pb.AuditEvent(
        name=f"auditEvents/{entry.seq}",
        seq=entry.seq,
        actor=event.actor,
        actor_role=event.actor_role,
        on_behalf_of=event.on_behalf_of,
        action=event.action,
        subject_id=event.subject_id,
        fields=list(event.fields),
        purpose=event.purpose,
        request_id=event.request_id,
        prev_hash=entry.prev_hash,
        entry_hash=entry.entry_hash,
    )
    message.occur_time.FromDatetime(entry.occurred_at)
    return message


def chain_range_of(request: pb.VerifyAuditChainRequest) -> ChainRange:
    """from_seq, to_seq and the expected head hash (None when not given)."""
    v = ViolationCollector()
    if request.from_seq < 0:
        v.add("from_seq", "must not be negative")
    if request.to_seq < 0:
        v.add("to_seq", "must not be negative")
    elif request.to_seq and request.to_seq < request.from_seq:
        v.add("to_seq", "must not be before from_seq")
    expected = request.expected_head_hash
    if expected and len(expected) != HASH_BYTES:
        v.add("expected_head_hash", f"{HASH_BYTES} bytes (a SHA-256 head hash)")
    v.raise_if_any()
    return ChainRange(request.from_seq, request.to_seq, expected or None)


def report_pb(report: ChainReport) -> pb.VerifyAuditChainResponse:
    return pb.VerifyAuditChainResponse(
        intact=report.intact,
        entries_checked=report.entries_checked,
        last_seq=report.last_seq,
        head_hash=report.head_hash,
        first_broken_seq=report.first_broken_seq,
        problem=_PROBLEMS[report.problem],
    )
