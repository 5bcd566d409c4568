"""gRPC <-> domain: a member's lifecycle (FreezeMember, UnfreezeMember, CloseMember)."""

from __future__ import annotations

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from services.accounts import proto
from services.accounts.domain.lifecycle import Action
from services.accounts.server_base import RpcGroup
from services.runtime.context import current_caller

ChangeRequest = pb.FreezeMemberRequest | pb.UnfreezeMemberRequest | pb.CloseMemberRequest


class LifecycleRpcs(RpcGroup):
    async def _change(self, request: ChangeRequest, action: Action) -> pb.Member:
        change = proto.change_request_of(
            name=request.name, request_id=request.request_id, reason=request.reason
        )
        member = await self.use_cases.status_changes.change(
            current_caller(),
            change.member_id,
            action,
            request_id=change.request_id,
            reason=change.reason,
        )
        return proto.member_to_pb(member)

    async def FreezeMember(
        self, request: pb.FreezeMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        return await self._change(request, Action.FREEZE)

    async def UnfreezeMember(
        self, request: pb.UnfreezeMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        return await self._change(request, Action.UNFREEZE)

    async def CloseMember(
        self, request: pb.CloseMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        return await self._change(request, Action.CLOSE)
