"""Protobuf <-> domain conversions every topic of points shares: timestamps, and the enums of
member states, processing causes and grant reasons."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb

from services.points.domain.members import MemberEventType, MemberState
from services.points.domain.processing_pauses import ProcessingCause
from services.points.domain.rules import GrantReason

MEMBER_STATES = {
    pb.MEMBER_STATE_ACTIVE: MemberState.ACTIVE,
    pb.MEMBER_STATE_FROZEN: MemberState.FROZEN,
    pb.MEMBER_STATE_CLOSED: MemberState.CLOSED,
    pb.MEMBER_STATE_ERASED: MemberState.ERASED,
}
MEMBER_EVENT_TYPES = {
    pb.MEMBER_EVENT_TYPE_REGISTERED: MemberEventType.REGISTERED,
    pb.MEMBER_EVENT_TYPE_STATUS_CHANGED: MemberEventType.STATUS_CHANGED,
}
CAUSES = {
    pb.PROCESSING_CAUSE_CONSENT_WITHDRAWN: ProcessingCause.CONSENT_WITHDRAWN,
    pb.PROCESSING_CAUSE_RESTRICTION_REQUESTED: ProcessingCause.RESTRICTION_REQUESTED,
}
GRANT_REASONS = {
    pb.GRANT_REASON_CHECK_IN: GrantReason.CHECK_IN,
    pb.GRANT_REASON_TASK: GrantReason.TASK,
    pb.GRANT_REASON_REFERRAL: GrantReason.REFERRAL,
    pb.GRANT_REASON_GOODWILL: GrantReason.GOODWILL,
}
# the mappings of requests read the other way
STATE_PB: dict[str, pb.MemberState.ValueType] = {t: v for v, t in MEMBER_STATES.items()}
CAUSE_PB: dict[str, pb.ProcessingCause.ValueType] = {t: v for v, t in CAUSES.items()}
GRANT_REASON_PB: dict[str, pb.GrantReason.ValueType] = {t: v for v, t in GRANT_REASONS.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
