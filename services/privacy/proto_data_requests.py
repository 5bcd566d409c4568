"""membership.privacy.v1.DataRightsService's messages <-> domain: requests parsed and checked
(every field violation at once), a data request as its message (also for the export bundle),
list filters and page positions, export parts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.type import date_pb2
from membership.privacy.v1 import data_rights_pb2 as pb

from services.privacy.domain import deadlines
from services.privacy.domain.data_request_intake import CORRECTABLE, Change, NewRequest
from services.privacy.domain.data_requests import (
    DataRequest,
    DeletionOutcome,
    ListFilter,
    ListPosition,
    RequestType,
    RequestView,
    State,
    StepFailure,
    VerificationMethod,
)
from services.privacy.domain.exports import Export, Part
from services.privacy.proto import channel_enum, channel_of, set_time
from services.runtime.errors import ViolationCollector, bad_field
from services.runtime.names import member_id_of
from services.runtime.paging import decode_token, encode_token

REQUEST_NAME = re.compile(r"^dataRequests/(dr[a-z2-7]{20})$")
EXPORT_NAME = re.compile(r"^dataRequests/(dr[a-z2-7]{20})/export$")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_CORRECTION_CHARS = 200
CODE = re.compile(r"[0-9]{8}")
MASKED = "***"  # a correction's values are personal information: reads show which fields

TYPES = {kind: pb.DataRequestType.Value(f"DATA_REQUEST_TYPE_{kind}") for kind in RequestType}
TYPE_NAMES = {value: kind for kind, value in TYPES.items()}
STATES = {state: pb.DataRequestState.Value(f"DATA_REQUEST_STATE_{state}") for state in State}
STATE_NAMES = {value: state for state, value in STATES.items()}
METHODS = {
    VerificationMethod.NONE: pb.VERIFICATION_METHOD_UNSPECIFIED,
    VerificationMethod.ONE_TIME_CODE: pb.VERIFICATION_METHOD_ONE_TIME_CODE,
    VerificationMethod.WALLET_ATTESTATION: pb.VERIFICATION_METHOD_WALLET_ATTESTATION,
}
OUTCOMES = {
    DeletionOutcome.NONE: pb.DELETION_OUTCOME_UNSPECIFIED,
    DeletionOutcome.ERASED: pb.DELETION_OUTCOME_ERASED,
    DeletionOutcome.RETAINED_RESTRICTED: pb.DELETION_OUTCOME_RETAINED_RESTRICTED,
}


@dataclass(frozen=True)
class ListQuery:
    where: ListFilter
    after: ListPosition | None  # None: the first page
    size: int
    token_query: dict[str, Any]  # what a page token is bound to


@dataclass(frozen=True)
class Proof:
    """How VerifyIdentity proves the member's identity: a one-time code or an attestation."""

    request_id: str
    code: str | None
    attestation_method: str = ""
    attestation_reference: str = ""


# --- requests -----------------------------------------------------------------------------


def _request_id_of(
    v: ViolationCollector, name: str, pattern: re.Pattern[str] = REQUEST_NAME
) -> str:
    match = pattern.fullmatch(name)
    if match is None:
        v.add("name", "required: dataRequests/{id}" + ("/export" if pattern is EXPORT_NAME else ""))
        return ""
    return match.group(1)


def request_id_of(name: str) -> str:
    v = ViolationCollector()
    request_id = _request_id_of(v, name)
    v.raise_if_any()
    return request_id


def keyed_request_id_of(name: str, key: str, *, key_optional: bool = False) -> str:
    """The request named, for a call with an idempotency key. Reject and Cancel gained their
    key after v1 callers existed: optional, but checked like any key when given."""
    v = ViolationCollector()
    request_id = _request_id_of(v, name)
    if key or not key_optional:
        v.request_id(key)
    v.raise_if_any()
    return request_id


def export_request_id_of(name: str) -> str:
    v = ViolationCollector()
    request_id = _request_id_of(v, name, EXPORT_NAME)
    v.raise_if_any()
    return request_id


def _correction(v: ViolationCollector, c: pb.Correction) -> tuple[Change, ...]:
    changes = []
    for field_name in CORRECTABLE:
        value = getattr(c, field_name)
        if value:
            if len(value) > MAX_CORRECTION_CHARS or not value.isprintable():
                v.add(f"data_request.correction.{field_name}", "at most 200 printable characters")
            changes.append(Change(field_name, value))
    return tuple(changes)


def new_request_of(request: pb.CreateDataRequestRequest) -> NewRequest:
    v = ViolationCollector()
    r = request.data_request
    member_id = member_id_of(v, r.member, "data_request.member")
    kind = TYPE_NAMES.get(r.type)
    if kind is None:
        v.add("data_request.type", "required: the type of request")
    channel = channel_of(v, r.channel)
    if r.initial_working_days and not (
        deadlines.MIN_WORKING_DAYS <= r.initial_working_days <= deadlines.MAX_WORKING_DAYS
    ):
        v.add("data_request.initial_working_days", "between 1 and 90 (0: the default 15)")
    correction = _correction(v, r.correction)
    v.request_id(request.request_id)
    v.raise_if_any()
    assert kind is not None
    return NewRequest(
        member_id=member_id,
        type=kind,
        channel=channel,
        purposes=tuple(r.purposes),
        transactions=tuple(r.transactions),
        correction=correction,
        working_days=r.initial_working_days,
    )


def proof_of(request: pb.VerifyIdentityRequest) -> Proof:
    v = ViolationCollector()
    request_id = _request_id_of(v, request.name)
    proof = request.WhichOneof("proof")
    if proof is None:
        v.add("code", "required: the one-time code, or an attestation")
    elif proof == "code" and not CODE.fullmatch(request.code):
        v.add("code", "8 digits")
    v.raise_if_any()
    if proof == "code":
        return Proof(request_id, request.code)
    a = request.attestation
    return Proof(request_id, None, a.method, a.reference)


def list_query_of(request: pb.ListDataRequestsRequest) -> ListQuery:
    v = ViolationCollector()
    states = [STATE_NAMES.get(s) for s in request.states]
    types = [TYPE_NAMES.get(t) for t in request.types]
    if None in states:
        v.add("states", "known states only")
    if None in types:
        v.add("types", "known types only")
    member_id = member_id_of(v, request.member, "member") if request.member else ""
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        v.add("page_size", f"between 0 and {MAX_PAGE_SIZE}")
    v.raise_if_any()
    where = ListFilter(
        states=tuple(sorted({s for s in states if s is not None})),
        types=tuple(sorted({t for t in types if t is not None})),
        member_id=member_id,
        overdue_only=request.overdue_only,
    )
    query = {
        "s": list(where.states),
        "t": list(where.types),
        "m": member_id,
        "o": request.overdue_only,
    }
    token = decode_token(request.page_token, query)
    after = position_of(token) if token else None
    return ListQuery(where, after, request.page_size or DEFAULT_PAGE_SIZE, query)


def next_page_token(query: ListQuery, last: DataRequest) -> str:
    return encode_token(token_of(ListPosition.after(last)), query.token_query)


def position_of(token: dict[str, Any]) -> ListPosition:
    try:
        return ListPosition(
            bool(token["c"]), datetime.fromisoformat(str(token["d"])), str(token["i"])
        )
    except (KeyError, ValueError) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc


def token_of(position: ListPosition) -> dict[str, Any]:
    return {"c": position.closed, "d": position.due_at.isoformat(), "i": position.id}


# --- a data request as its message ------------------------------------------------------------


def request_pb(view: RequestView, *, with_timeline: bool = True) -> pb.DataRequest:
    row = view.request
    message = pb.DataRequest(
        name=row.name,
        member=f"members/{row.member_id}",
        type=TYPES[row.type],
        channel=channel_enum(row.channel),
        state=STATES[row.state],
        purposes=row.purposes,
        transactions=row.transactions,
        due_date=date_pb2.Date(
            year=row.due_date.year, month=row.due_date.month, day=row.due_date.day
        ),
        working_days=row.working_days,
        initial_working_days=row.initial_working_days,
        deadline_provisional=row.deadline_provisional,
        overdue=view.overdue,
        verification_method=METHODS[row.verification_method],
        attestation_method=row.attestation_method,
        rejection_reason=row.rejection_reason,
        deletion_outcome=OUTCOMES[row.deletion_outcome],
    )
    set_time(message.create_time, row.created_at)
    set_time(message.due_time, row.due_at)
    set_time(message.update_time, row.updated_at)
    _fill_type_fields(message, row)
    if view.export is not None:
        message.export.CopyFrom(_export_pb(view.export, view.now))
    if with_timeline:
        _fill_timeline(message, view)
    return message


def _fill_type_fields(message: pb.DataRequest, row: DataRequest) -> None:
    if row.correction_fields:
        message.correction.CopyFrom(pb.Correction(**dict.fromkeys(row.correction_fields, MASKED)))
    for e in row.extensions:
        extension = message.extensions.add(
            extra_working_days=e.extra_working_days, reason=e.reason, actor=e.actor
        )
        extension.create_time.FromDatetime(e.at)
    if row.explanation is not None:
        message.explanation.rules_json = row.explanation.rules
        message.explanation.transaction_explanations_json.extend(row.explanation.transactions)
    if row.step_failure is not None:
        message.step_failure.CopyFrom(_step_failure_pb(row.step_failure))


def _step_failure_pb(stopped: StepFailure) -> pb.StepFailure:
    failure = pb.StepFailure(
        step=stopped.step,
        service=stopped.service,
        code=stopped.code,
        reason=stopped.reason,
        fields=stopped.fields,
        retries_exhausted=stopped.retries_exhausted,
    )
    failure.create_time.FromDatetime(stopped.at)
    return failure


def _fill_timeline(message: pb.DataRequest, view: RequestView) -> None:
    for step in view.request.steps:
        item = message.steps.add(step=step.name, last_error=step.last_error)
        set_time(item.done_time, step.done_at)
    for event in view.events:
        entry = message.events.add(
            state=STATES[event.state], action=event.action, actor=event.actor, note=event.note
        )
        entry.create_time.FromDatetime(event.created_at)


def _export_pb(export: Export, now: datetime) -> pb.ExportInfo:
    info = pb.ExportInfo(
        downloads_remaining=export.downloads_remaining,
        size_bytes=export.archive_size_bytes,
        purged=export.gone(now),
    )
    info.expire_time.FromDatetime(export.expires_at)
    return info


def part_pb(name: str, part: Part) -> pb.Export:
    export = pb.Export(
        name=name,
        archive_part=part.data,
        offset=part.offset,
        archive_size_bytes=part.export.archive_size_bytes,
        archive_sha256=part.export.archive_sha256,
        downloads_remaining=part.export.downloads_remaining,
        next_page_token=part.next_page_token,
    )
    export.expire_time.FromDatetime(part.export.expires_at)
    return export
