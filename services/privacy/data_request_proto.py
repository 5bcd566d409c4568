"""A data-subject request as its protobuf message (shared by the servicer and the export)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.type import date_pb2
from membership.privacy.v1 import data_rights_pb2 as pb

from services.privacy.data_rights import RequestView
from services.privacy.server_consent import CHANNEL_ENUMS
from services.privacy.store_exports import ExportRow
from services.privacy.store_requests import RequestRow

TYPES = {
    name: pb.DataRequestType.Value(f"DATA_REQUEST_TYPE_{name}")
    for name in (
        "ACCESS",
        "PORTABILITY",
        "CORRECTION",
        "DELETION",
        "EXPLANATION",
        "RESTRICTION",
        "CONSENT_WITHDRAWAL",
    )
}
TYPE_NAMES = {value: name for name, value in TYPES.items()}
STATES = {
    name: pb.DataRequestState.Value(f"DATA_REQUEST_STATE_{name}")
    for name in (
        "RECEIVED",
        "IDENTITY_VERIFIED",
        "IN_PROGRESS",
        "COMPLETED",
        "REJECTED",
        "CANCELLED",
    )
}
STATE_NAMES = {value: name for name, value in STATES.items()}
METHODS = {
    "": pb.VERIFICATION_METHOD_UNSPECIFIED,
    "ONE_TIME_CODE": pb.VERIFICATION_METHOD_ONE_TIME_CODE,
    "WALLET_ATTESTATION": pb.VERIFICATION_METHOD_WALLET_ATTESTATION,
}
OUTCOMES = {
    "": pb.DELETION_OUTCOME_UNSPECIFIED,
    "ERASED": pb.DELETION_OUTCOME_ERASED,
    "RETAINED_RESTRICTED": pb.DELETION_OUTCOME_RETAINED_RESTRICTED,
}
MASKED = "***"  # a correction's values are personal information: reads show which fields


def _set_time(target: object, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)  # type: ignore[attr-defined]


def request_pb(view: RequestView, with_timeline: bool = True) -> pb.DataRequest:
    row = view.row
    message = pb.DataRequest(
        name=f"dataRequests/{row.id}",
        member=f"members/{row.member_id}",
        type=TYPES[row.type],
        channel=CHANNEL_ENUMS.get(row.channel, 0),  # type: ignore[arg-type]
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
    _set_time(message.create_time, row.created_at)
    _set_time(message.due_time, row.due_at)
    _set_time(message.update_time, row.updated_at)
    _fill_type_fields(message, row)
    if view.export is not None:
        message.export.CopyFrom(_export_pb(view.export, view.now))
    if with_timeline:
        _fill_timeline(message, view)
    return message


def _fill_type_fields(message: pb.DataRequest, row: RequestRow) -> None:
    if row.correction_fields:
        message.correction.CopyFrom(pb.Correction(**dict.fromkeys(row.correction_fields, MASKED)))
    for e in row.extensions:
        extension = message.extensions.add(
            extra_working_days=e["extra_working_days"], reason=e["reason"], actor=e["actor"]
        )
        extension.create_time.FromDatetime(datetime.fromisoformat(e["at"]))
    if row.explanation is not None:
        message.explanation.rules_json = row.explanation["rules"]
        message.explanation.transaction_explanations_json.extend(row.explanation["transactions"])
    if row.step_failure is not None:
        message.step_failure.CopyFrom(_step_failure_pb(row.step_failure))


def _step_failure_pb(stopped: dict[str, Any]) -> pb.StepFailure:
    failure = pb.StepFailure(
        step=stopped["step"],
        service=stopped["service"],
        code=stopped["code"],
        reason=stopped["reason"],
        fields=stopped["fields"],
        retries_exhausted=stopped["retries_exhausted"],
    )
    failure.create_time.FromDatetime(datetime.fromisoformat(stopped["at"]))
    return failure


def _fill_timeline(message: pb.DataRequest, view: RequestView) -> None:
    for step in view.row.steps:
        item = message.steps.add(step=step.name, last_error=step.last_error)
        _set_time(item.done_time, step.done_at)
    for event in view.events:
        entry = message.events.add(
            state=STATES[event.state], action=event.action, actor=event.actor, note=event.note
        )
        entry.create_time.FromDatetime(event.created_at)


def _export_pb(export: ExportRow, now: datetime) -> pb.ExportInfo:
    info = pb.ExportInfo(
        downloads_remaining=export.downloads_remaining,
        size_bytes=export.archive_size_bytes,
        purged=export.purged_at is not None or now >= export.expires_at,
    )
    info.expire_time.FromDatetime(export.expires_at)
    return info
