"""Protobuf <-> domain of RestrictMember (internal, for the privacy service)."""

from __future__ import annotations

from datetime import UTC

from membership.points.v1 import points_pb2 as pb

from services.points.domain.restrictions import Restriction, RestrictRequest
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_LEGAL_BASIS = 2000


def restrict_request_of(request: pb.RestrictMemberRequest) -> RestrictRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.request_id)
    v.text(request.legal_basis, "legal_basis", MAX_LEGAL_BASIS, required=True)
    end = None
    if not request.HasField("retention_end_time"):
        v.add("retention_end_time", "required")
    else:
        try:
            end = request.retention_end_time.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            v.add("retention_end_time", "not a valid time")
    v.raise_if_any()
    assert end is not None
    return RestrictRequest(member_id, request.request_id, request.legal_basis, end)


def restriction_pb(row: Restriction) -> pb.MemberRestriction:
    return pb.MemberRestriction(
        member=member_name(row.member_id),
        request_id=row.request_id,
        legal_basis=row.legal_basis,
        retention_end_time=timestamp(row.retention_end),
        restrict_time=timestamp(row.restricted_at),
    )
