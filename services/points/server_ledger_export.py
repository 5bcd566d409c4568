"""gRPC <-> domain: ExportMemberLedger and StreamMemberLedger (internal, for the privacy
service)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.domain.ledger_export import page_size
from services.points.proto_ledger_export import chunk_pb, export_pb, member_of
from services.points.server_base import RpcGroup


class LedgerExportRpcs(RpcGroup):
    async def ExportMemberLedger(
        self, request: pb.ExportMemberLedgerRequest, context: grpc.aio.ServicerContext
    ) -> pb.MemberLedgerExport:
        member_id = member_of(request)
        size = page_size(request.page_size)
        page = await self.deps.ledger_export.export(member_id, size, request.page_token)
        return export_pb(page)

    async def StreamMemberLedger(
        self, request: pb.StreamMemberLedgerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.MemberLedgerChunk]:
        member_id = member_of(request)
        async for item in self.deps.ledger_stream.stream(member_id):
            yield chunk_pb(item)
