"""gRPC <-> domain: UpdateMember (and its validate_only preview)."""

from __future__ import annotations

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from services.accounts import proto
from services.accounts.server_base import RpcGroup


class UpdateRpcs(RpcGroup):
    async def UpdateMember(
        self, request: pb.UpdateMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        update = proto.update_request_of(request)
        updates = self.use_cases.profile_updates
        if update.validate_only:
            return proto.member_to_pb(await updates.preview(update.member_id, update.changes))
        member = await updates.update(
            update.member_id, request_id=update.request_id, changes=update.changes
        )
        return proto.member_to_pb(member)
