"""gRPC <-> domain: reading members (GetMember, LookupMember, ListMembers)."""

from __future__ import annotations

import grpc
from membership.accounts.v1 import accounts_pb2 as pb

from services.accounts import proto
from services.accounts.domain import reasons
from services.accounts.server_base import RpcGroup
from services.runtime import access
from services.runtime.context import current_caller
from services.runtime.errors import permission_denied


class MemberReadRpcs(RpcGroup):
    async def GetMember(
        self, request: pb.GetMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        caller = current_caller()
        # permission first: a caller that may not read in clear learns nothing more
        if request.view == pb.MEMBER_VIEW_FULL and not caller.has_scope(access.SCOPE_READ_PII):
            raise permission_denied(
                reasons.SCOPE_MISSING, "the FULL view needs accounts.members.read_pii"
            )
        get = proto.get_request_of(request)
        members = self.use_cases.members
        if not get.full:
            return proto.member_to_pb(await members.get(get.member_id))
        member = await members.get_full(caller, get.member_id, purpose=get.purpose)
        return proto.member_to_pb(member)

    async def LookupMember(
        self, request: pb.LookupMemberRequest, context: grpc.aio.ServicerContext
    ) -> pb.Member:
        lookup = proto.lookup_request_of(request)
        member = await self.use_cases.members.lookup(lookup.kind, lookup.normalised_value)
        return proto.member_to_pb(member)

    async def ListMembers(
        self, request: pb.ListMembersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMembersResponse:
        listed = proto.list_request_of(request)
        # one beyond the page: whether another page follows
        members = await self.use_cases.members.list(
            listed.status, listed.after, listed.page_size + 1
        )
        return proto.list_response(members, listed)
