"""gRPC <-> domain: GetProgram (the program in force) and ExplainMemberRules (internal,
for the privacy service)."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_program import check_program_name, explanation_pb, member_of, program_pb
from services.points.server_base import RpcGroup


class ProgramRpcs(RpcGroup):
    async def GetProgram(
        self, request: pb.GetProgramRequest, context: grpc.aio.ServicerContext
    ) -> pb.Program:
        check_program_name(request)
        return program_pb(await self.deps.program.program())

    async def ExplainMemberRules(
        self, request: pb.ExplainMemberRulesRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberRulesExplanation:
        member_id = member_of(request)
        return explanation_pb(await self.deps.program.explain(member_id))
