"""gRPC <-> domain: GrantPoints."""

from __future__ import annotations

from datetime import UTC

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.grants import GrantRequest, GrantResult, Grants
from services.points.server_base import RpcGroup, timestamp
from services.runtime.context import current_caller
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_GRANT_POINTS = 10**9
MAX_NOTE = 200
REASONS = {
    pb.GRANT_REASON_CHECK_IN: "CHECK_IN",
    pb.GRANT_REASON_TASK: "TASK",
    pb.GRANT_REASON_REFERRAL: "REFERRAL",
    pb.GRANT_REASON_GOODWILL: "GOODWILL",
}
REASONS_PB = {v: k for k, v in REASONS.items()}


def grant_request_of(request: pb.GrantPointsRequest) -> GrantRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.request_id)
    if not 0 < request.points <= MAX_GRANT_POINTS:
        v.add("points", f"must be between 1 and {MAX_GRANT_POINTS}")
    if request.reason not in REASONS:
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
        REASONS[request.reason],
        request.note,
        expires,
    )


def grant_pb(result: GrantResult) -> pb.Grant:
    member = member_name(result.member_id)
    return pb.Grant(
        name=f"{member}/grants/{result.request_id}",
        points=result.points,
        reason=REASONS_PB[result.reason],
        expire_time=timestamp(result.expires_at),
        debt_repaid=result.debt_repaid,
        rule_version=result.rule_version,
        transaction=f"{member}/transactions/{result.txn_id}",
    )


class GrantRpcs(RpcGroup):
    async def GrantPoints(
        self, request: pb.GrantPointsRequest, context: grpc.aio.ServicerContext
    ) -> pb.Grant:
        grants = Grants(self.deps.pool, self.deps.ledger.rules, self.deps.clock)
        grant = grant_request_of(request)
        granted = grants.grant(current_caller(), grant)
        return grant_pb(await self.for_known_member(grant.member_id, granted))
