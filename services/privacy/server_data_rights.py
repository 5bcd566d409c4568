"""gRPC <-> domain for membership.privacy.v1.DataRightsService."""

from __future__ import annotations

import re
from datetime import datetime

import grpc
from membership.privacy.v1 import data_rights_pb2 as pb
from membership.privacy.v1 import data_rights_pb2_grpc as pb_grpc

from services.privacy import data_requests as rules
from services.privacy import store_requests
from services.privacy.data_request_proto import STATE_NAMES, TYPE_NAMES, request_pb
from services.privacy.data_rights import DataRights
from services.privacy.domain import deadlines
from services.privacy.exports import Exports
from services.privacy.fulfilment import Fulfiller
from services.privacy.server_consent import channel_of
from services.runtime.context import current_caller
from services.runtime.errors import ViolationCollector, bad_field
from services.runtime.names import member_id_of
from services.runtime.paging import decode_token, encode_token

REQUEST_NAME = re.compile(r"^dataRequests/(dr[a-z2-7]{20})$")
EXPORT_NAME = re.compile(r"^dataRequests/(dr[a-z2-7]{20})/export$")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_CORRECTION_CHARS = 200


def _request_id_of(
    v: ViolationCollector, name: str, pattern: re.Pattern[str] = REQUEST_NAME
) -> str:
    match = pattern.fullmatch(name)
    if match is None:
        v.add("name", "required: dataRequests/{id}" + ("/export" if pattern is EXPORT_NAME else ""))
        return ""
    return match.group(1)


def _optional_key(v: ViolationCollector, key: str) -> None:
    """Reject and Cancel gained their key after v1 callers existed: optional, but checked
    like any key when given."""
    if key:
        v.request_id(key)


def _correction(v: ViolationCollector, c: pb.Correction) -> tuple[tuple[str, str], ...]:
    changes = []
    for field_name in rules.CORRECTABLE:
        value = getattr(c, field_name)
        if value:
            if len(value) > MAX_CORRECTION_CHARS or not value.isprintable():
                v.add(f"data_request.correction.{field_name}", "at most 200 printable characters")
            changes.append((field_name, value))
    return tuple(changes)


def _new_request(v: ViolationCollector, r: pb.DataRequest) -> rules.NewRequest:
    member_id = member_id_of(v, r.member, "data_request.member")
    kind = TYPE_NAMES.get(r.type, "")
    if not kind:
        v.add("data_request.type", "required: the type of request")
    channel = channel_of(v, r.channel)
    if r.initial_working_days and not (
        deadlines.MIN_WORKING_DAYS <= r.initial_working_days <= deadlines.MAX_WORKING_DAYS
    ):
        v.add("data_request.initial_working_days", "between 1 and 90 (0: the default 15)")
    return rules.NewRequest(
        member_id=member_id,
        type=kind,
        channel=channel,
        purposes=tuple(r.purposes),
        transactions=tuple(r.transactions),
        correction=_correction(v, r.correction),
        working_days=r.initial_working_days,
    )


class DataRightsServicer(pb_grpc.DataRightsServiceServicer):
    def __init__(self, rights: DataRights, fulfiller: Fulfiller, exports: Exports) -> None:
        self._rights = rights
        self._fulfiller = fulfiller
        self._exports = exports

    async def CreateDataRequest(
        self, request: pb.CreateDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        new = _new_request(v, request.data_request)
        v.request_id(request.request_id)
        v.raise_if_any()
        view = await self._rights.create(current_caller(), new, request.request_id)
        return request_pb(view)

    async def GetDataRequest(
        self, request: pb.GetDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        v.raise_if_any()
        return request_pb(await self._rights.get(request_id))

    async def ListDataRequests(
        self, request: pb.ListDataRequestsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDataRequestsResponse:
        v = ViolationCollector()
        where, query = self._filter(v, request)
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            v.add("page_size", f"between 0 and {MAX_PAGE_SIZE}")
        v.raise_if_any()
        position = decode_token(request.page_token, query)
        after = _position(position) if position else None
        size = request.page_size or DEFAULT_PAGE_SIZE
        views = await self._rights.list(where, after, size + 1)
        token = ""
        if len(views) > size:
            last = views[size - 1].row
            token = encode_token(
                {"c": last.closed_at is not None, "d": last.due_at.isoformat(), "i": last.id},
                query,
            )
        return pb.ListDataRequestsResponse(
            data_requests=[request_pb(view, with_timeline=False) for view in views[:size]],
            next_page_token=token,
        )

    def _filter(
        self, v: ViolationCollector, request: pb.ListDataRequestsRequest
    ) -> tuple[store_requests.ListFilter, dict[str, object]]:
        states = [STATE_NAMES.get(s, "") for s in request.states]
        types = [TYPE_NAMES.get(t, "") for t in request.types]
        if "" in states:
            v.add("states", "known states only")
        if "" in types:
            v.add("types", "known types only")
        member_id = member_id_of(v, request.member, "member") if request.member else ""
        where = store_requests.ListFilter(
            states=sorted(set(states)),
            types=sorted(set(types)),
            member_id=member_id,
            overdue_at=self._rights.clock() if request.overdue_only else None,
        )
        query = {"s": where.states, "t": where.types, "m": member_id, "o": request.overdue_only}
        return where, query

    async def IssueVerificationCode(
        self, request: pb.IssueVerificationCodeRequest, context: grpc.aio.ServicerContext
    ) -> pb.IssueVerificationCodeResponse:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        v.raise_if_any()
        issued = await self._rights.issue_code(current_caller(), request_id)
        response = pb.IssueVerificationCodeResponse(
            code=issued.code, attempts_allowed=issued.attempts
        )
        response.expire_time.FromDatetime(issued.expires_at)
        return response

    async def VerifyIdentity(
        self, request: pb.VerifyIdentityRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        proof = request.WhichOneof("proof")
        if proof is None:
            v.add("code", "required: the one-time code, or an attestation")
        elif proof == "code" and not re.fullmatch(r"[0-9]{8}", request.code):
            v.add("code", "8 digits")
        v.raise_if_any()
        caller = current_caller()
        if proof == "code":
            view = await self._rights.verify_code(caller, request_id, request.code)
        else:
            a = request.attestation
            view = await self._rights.attest(caller, request_id, a.method, a.reference)
        return request_pb(view)

    async def ApproveDataRequest(
        self, request: pb.ApproveDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        v.request_id(request.request_id)
        v.raise_if_any()
        view = await self._fulfiller.approve(current_caller(), request_id, request.request_id)
        return request_pb(view)

    async def RejectDataRequest(
        self, request: pb.RejectDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        _optional_key(v, request.request_id)
        v.raise_if_any()
        view = await self._rights.reject(
            current_caller(), request_id, request.reason, request.request_id
        )
        return request_pb(view)

    async def CancelDataRequest(
        self, request: pb.CancelDataRequestRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        _optional_key(v, request.request_id)
        v.raise_if_any()
        view = await self._rights.cancel(current_caller(), request_id, request.request_id)
        return request_pb(view)

    async def ExtendDataRequestDeadline(
        self, request: pb.ExtendDataRequestDeadlineRequest, context: grpc.aio.ServicerContext
    ) -> pb.DataRequest:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name)
        v.request_id(request.request_id)
        v.raise_if_any()
        view = await self._rights.extend(
            current_caller(),
            request_id,
            request.extra_working_days,
            request.reason,
            request.request_id,
        )
        return request_pb(view)

    async def DownloadExport(
        self, request: pb.DownloadExportRequest, context: grpc.aio.ServicerContext
    ) -> pb.Export:
        v = ViolationCollector()
        request_id = _request_id_of(v, request.name, EXPORT_NAME)
        v.raise_if_any()
        part = await self._exports.download(current_caller(), request_id, request.page_token)
        export = pb.Export(
            name=request.name,
            archive_part=part.data,
            offset=part.offset,
            archive_size_bytes=part.export.archive_size_bytes,
            archive_sha256=part.export.archive_sha256,
            downloads_remaining=part.export.downloads_remaining,
            next_page_token=part.next_page_token,
        )
        export.expire_time.FromDatetime(part.export.expires_at)
        return export


def _position(position: dict[str, object]) -> tuple[bool, datetime, str]:
    try:
        return bool(position["c"]), datetime.fromisoformat(str(position["d"])), str(position["i"])
    except (KeyError, ValueError) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc
