"""gRPC <-> domain: RegisterMember."""

from __future__ import annotations

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from services.accounts import proto
from services.accounts.server_base import RpcGroup


class RegistrationRpcs(RpcGroup):
    async def RegisterMember(
        self, request: pb.RegisterMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        registration = proto.registration_of(request)
        return proto.member_to_pb(await self.use_cases.registrations.register(registration))
