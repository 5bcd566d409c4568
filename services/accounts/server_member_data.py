"""gRPC <-> domain: the internal RPCs privacy calls for data-subject requests
(ExportMemberData, EraseMemberData)."""

from __future__ import annotations

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from services.accounts import proto
from services.accounts.server_base import RpcGroup
from services.runtime.context import current_caller
from services.runtime.names import member_name


class MemberDataRpcs(RpcGroup):
    async def ExportMemberData(
        self, request: pb.ExportMemberDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportMemberDataResponse:
        asked = proto.export_request_of(request)
        export = await self.use_cases.member_data.export(
            current_caller(), asked.member_id, purpose=asked.purpose
        )
        return pb.ExportMemberDataResponse(
            member=proto.member_to_pb(export.member),
            status_history=[proto.status_change_to_pb(c) for c in export.history],
            referred_members=[member_name(m) for m in export.referred_members],
        )

    async def EraseMemberData(
        self, request: pb.EraseMemberDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.EraseMemberDataResponse:
        change = proto.change_request_of(
            name=request.name, request_id=request.request_id, reason=request.reason
        )
        erasure = await self.use_cases.member_data.erase(
            current_caller(), change.member_id, request_id=change.request_id, reason=change.reason
        )
        return pb.EraseMemberDataResponse(
            member=proto.member_to_pb(erasure.member),
            removed_index_entries=erasure.removed_index_entries,
        )
