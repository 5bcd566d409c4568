"""gRPC <-> domain for membership.privacy.v1.DataRightsService (messages:
proto_data_requests.py; the use cases: data_requests.py, data_request_fulfilment.py for
approvals, exports.py for downloads)."""

from __future__ import annotations

import grpc
from membership.privacy.v1 import data_rights_pb2 as pb
from membership.privacy.v1 import data_rights_pb2_grpc as pb_grpc

from services.privacy import proto_data_requests as proto
from services.privacy.data_request_fulfilment import Fulfiller
from services.privacy.data_requests import DataRequests
from services.privacy.exports import Exports
from services.runtime.context import current_caller


class DataRightsServicer(pb_grpc.DataRightsServiceServicer):
    def __init__(self, requests: DataRequests, fulfiller: Fulfiller, exports: Exports) -> None:
        self._requests = requests
        self._fulfiller = fulfiller
        self._exports = exports

    async def CreateDataRequest(
        self, request: pb.CreateDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        new = proto.new_request_of(request)
        view = await self._requests.create(current_caller(), new, request.request_id)
        return proto.request_pb(view)

    async def GetDataRequest(
        self, request: pb.GetDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        request_id = proto.request_id_of(request.name)
        return proto.request_pb(await self._requests.get(request_id))

    async def ListDataRequests(
        self, request: pb.ListDataRequestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDataRequestsResponse:
        query = proto.list_query_of(request)
        views = await self._requests.list(query.where, query.after, query.size + 1)
        page = views[: query.size]
        token = proto.next_page_token(query, page[-1].request) if len(views) > query.size else ""
        return pb.ListDataRequestsResponse(
            data_requests=[proto.request_pb(view, with_timeline=False) for view in page],
            next_page_token=token,
        )

    async def IssueVerificationCode(
        self, request: pb.IssueVerificationCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueVerificationCodeResponse:
        request_id = proto.request_id_of(request.name)
        issued = await self._requests.issue_code(current_caller(), request_id)
        response = pb.IssueVerificationCodeResponse(
            code=issued.code, attempts_allowed=issued.attempts
        )
        response.expire_time.FromDatetime(issued.expires_at)
        return response

    async def VerifyIdentity(
        self, request: pb.VerifyIdentityRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        proof = proto.proof_of(request)
        caller = current_caller()
        if proof.code is not None:
            view = await self._requests.verify_code(caller, proof.request_id, code=proof.code)
        else:
            view = await self._requests.attest(
                caller,
                proof.request_id,
                method=proof.attestation_method,
                reference=proof.attestation_reference,
            )
        return proto.request_pb(view)

    async def ApproveDataRequest(
        self, request: pb.ApproveDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        request_id = proto.keyed_request_id_of(request.name, request.request_id)
        view = await self._fulfiller.approve(current_caller(), request_id, key=request.request_id)
        return proto.request_pb(view)

    async def RejectDataRequest(
        self, request: pb.RejectDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        request_id = proto.keyed_request_id_of(request.name, request.request_id, key_optional=True)
        view = await self._requests.reject(
            current_caller(), request_id, reason=request.reason, key=request.request_id
        )
        return proto.request_pb(view)

    async def CancelDataRequest(
        self, request: pb.CancelDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        request_id = proto.keyed_request_id_of(request.name, request.request_id, key_optional=True)
        view = await self._requests.cancel(current_caller(), request_id, key=request.request_id)
        return proto.request_pb(view)

    async def ExtendDataRequestDeadline(
        self, request: pb.ExtendDataRequestDeadlineRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        request_id = proto.keyed_request_id_of(request.name, request.request_id)
        view = await self._requests.extend(
            current_caller(),
            request_id,
            extra_days=request.extra_working_days,
            reason=request.reason,
            key=request.request_id,
        )
        return proto.request_pb(view)

    async def DownloadExport(
        self, request: pb.DownloadExportRequest, context: grpc.aio.ServicerContext
    ) -> pb.Export:
        request_id = proto.export_request_id_of(request.name)
        part = await self._exports.download(
            current_caller(), request_id, page_token=request.page_token
        )
        return proto.part_pb(request.name, part)
