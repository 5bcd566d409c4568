"""Protobuf <-> domain of GrantPoints."""

from __future__ import annotations

from datetime import UTC

from membership.points.v1 import points_pb2 as pb

from services.points.domain.grants import GrantRequest, GrantResult
from services.points.proto import GRANT_REASON_PB, GRANT_REASONS, timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_GRANT_POINTS = 10**9
MAX_NOTE = 200


def grant_request_of(request: pb.GrantPointsRequest) -> GrantRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.request_id)
    if not 0 < request.points <= MAX_GRANT_POINTS:
        v.add("points", f"must be between 1 and {MAX_GRANT_POINTS}")
    if request.reason not in GRANT_REASONS:
        v.add("reason", "one of CHECK_IN, TASK, REFERRAL, GOODWILL")
    v.text(request.note, "note", MAX_NOTE, required=False)
    v.raise_if_any()
    expires = (
        request.expire_time.ToDatetime(tzinfo=UTC) if request.HasField("expire_time") else None
    )
    return GrantRequest(
        member_id,
        request.request_id,
        request.points,
        GRANT_REASONS[request.reason],
        request.note,
        expires,
    )


def grant_pb(result: GrantResult) -> pb.Grant:
    member = member_name(result.member_id)
    return pb.Grant(
        name=f"{member}/grants/{result.request_id}",
        points=result.points,
        reason=GRANT_REASON_PB[result.reason],
        expire_time=timestamp(result.expires_at),
        debt_repaid=result.debt_repaid,
        rule_version=result.rule_version,
        transaction=f"{member}/transactions/{result.txn_id}",
    )
