"""gRPC <-> domain: ListTransactions, ExplainTransaction."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from services.points.proto_transactions import (
    explanation_pb,
    parse_transaction_name,
    query_of,
    transaction_pb,
)
from services.points.server_base import RpcGroup
from services.runtime.errors import ViolationCollector


class TransactionRpcs(RpcGroup):
    async def ListTransactions(
        self, request: pb.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTransactionsResponse:
        entries, token = await self.deps.transactions.list(query_of(request))
        return pb.ListTransactionsResponse(
            transactions=[transaction_pb(e) for e in entries], next_page_token=token
        )

    async def ExplainTransaction(
        self, request: pb.ExplainTransactionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TransactionExplanation:
        v = ViolationCollector()
        member_id, txn_id = parse_transaction_name(v, request.name)
        v.raise_if_any()
        return explanation_pb(await self.deps.transactions.explain(member_id, txn_id))
