"""gRPC <-> domain for membership.privacy.v1.AuditService (messages: proto_audit.py, the use
case: audit.py)."""

from __future__ import annotations

import grpc
from membership.privacy.v1 import audit_pb2 as pb
from membership.privacy.v1 import audit_pb2_grpc as pb_grpc

from services.privacy import proto_audit as proto
from services.privacy.audit import AuditLog


class AuditServicer(pb_grpc.AuditServiceServicer):
    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAuditEventsResponse:
        where = proto.filter_of(request)
        size = proto.page_size(request.page_size)
        after_seq = proto.after_seq_of(request.page_token, where)
        page = await self._audit.list_page(where, after_seq, size)
        token = proto.next_page_token(page.entries[-1].seq, where) if page.more else ""
        return pb.ListAuditEventsResponse(
            audit_events=[proto.event_pb(e) for e in page.entries], next_page_token=token
        )

    async def VerifyAuditChain(
        self, request: pb.VerifyAuditChainRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyAuditChainResponse:
        bounds = proto.chain_range_of(request)
        return proto.report_pb(await self._audit.verify(bounds))
