"""gRPC <-> domain: Reconcile."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_reconcile import member_of, report_pb
from services.points.server_base import RpcGroup


class ReconcileRpcs(RpcGroup):
    async def Reconcile(
        self, request: pb.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReconcileResponse:
        member_id = member_of(request)
        return report_pb(await self.deps.reconciler.reconcile(member_id))
