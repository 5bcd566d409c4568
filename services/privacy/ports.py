"""What privacy needs from accounts and points to fulfil data-subject requests, over their
internal RPCs (like connectors: privacy never reads their tables): one typed method per
remote call, domain types in and out, protobuf inside.

Every call has a deadline and this service's own token. A failure is a `ServiceCallError`
that says whether retrying later can help (the service was down or slow) or not (it
refused: a conflict, bad data), so fulfilment knows whether to schedule a retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

import grpc
from google.protobuf import field_mask_pb2, json_format, message, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from membership.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from membership.points.v1 import points_pb2, points_pb2_grpc

from services.privacy.domain.data_request_intake import CORRECTABLE, Change
from services.privacy.domain.erasures import Retention
from services.privacy.domain.export_bundle import MemberExport
from services.privacy.domain.export_stream import (
    LedgerEnd,
    LedgerPiece,
    LedgerSection,
    LedgerSummary,
    LedgerText,
)
from services.privacy.domain.service_calls import (
    LEDGER_STREAM_UNREADABLE,
    ServiceCallError,
    Violation,
)
from services.runtime.clients import ReconnectingChannel, ServiceCredentials
from services.runtime.errors import Code

ACCOUNTS = "accounts"
POINTS = "points"
EXPORT_TIMEOUT_S = 30.0
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# UpdateMember's fields, as a correction's (services never share code: accounts' names are
# read off its API)
CORRECTION_FIELDS = {f"member.{name}": f"correction.{name}" for name in CORRECTABLE}

Stub = TypeVar("Stub")
Response = TypeVar("Response")
Metadata = tuple[tuple[str, str], ...]
# a stub's RPC called with its deadline and metadata
Rpc = Callable[[Stub, float, Metadata], Awaitable[Response]]
# a stub's server-streaming RPC, likewise
StreamRpc = Callable[[Stub, float, Metadata], AsyncIterator[Response]]


class Refusal(NamedTuple):
    reason: str  # google.rpc.ErrorInfo's
    violations: list[Violation]  # google.rpc.BadRequest's


def _refusal(err: grpc.aio.AioRpcError) -> Refusal:
    """The ErrorInfo reason and BadRequest violations of a failed call (none if absent or
    unreadable: a service down sends none)."""
    status = status_pb2.Status()
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            with contextlib.suppress(message.DecodeError):
                status = status_pb2.Status.FromString(value)
            break
    reason, violations = "", []
    for detail in status.details:
        info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(bad):
            violations += [Violation(v.field, v.description) for v in bad.field_violations]
    return Refusal(reason, violations)


class _Remote(Generic[Stub]):
    """Calls of one service's stub over a reconnecting channel: after an outage the next
    attempt connects at once instead of waiting out a channel's own reconnection backoff
    (up to two minutes)."""

    def __init__(
        self,
        service: str,
        channel: ReconnectingChannel,
        stub: Callable[[grpc.aio.Channel], Stub],
        credentials: ServiceCredentials,
        timeout_s: float,
    ) -> None:
        self._service = service
        self._channel = channel
        self._stub = stub
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def call(self, rpc: Rpc[Stub, Response], timeout_s: float = 0.0) -> Response:
        metadata = self._credentials.metadata()
        timeout = timeout_s or self._timeout_s
        try:
            return await self._channel.call(lambda ch: rpc(self._stub(ch), timeout, metadata))
        except grpc.aio.AioRpcError as err:
            raise self._failure(err) from None

    async def stream(
        self, rpc: StreamRpc[Stub, Response], timeout_s: float = 0.0
    ) -> AsyncGenerator[Response, None]:
        """A server stream's messages; a failure, even after some, as ServiceCallError."""
        metadata = self._credentials.metadata()
        timeout = timeout_s or self._timeout_s
        try:
            async for message in self._channel.stream(
                lambda ch: rpc(self._stub(ch), timeout, metadata)
            ):
                yield message
        except grpc.aio.AioRpcError as err:
            raise self._failure(err) from None

    def _failure(self, err: grpc.aio.AioRpcError) -> ServiceCallError:
        refusal = _refusal(err)
        return ServiceCallError(
            self._service,
            err.code().name,
            transient=err.code() in TRANSIENT,
            reason=refusal.reason,
            violations=refusal.violations,
        )

    async def close(self) -> None:
        await self._channel.close()


class AccountsPort:
    def __init__(
        self, channel: ReconnectingChannel, credentials: ServiceCredentials, timeout_s: float
    ) -> None:
        self._remote = _Remote(
            ACCOUNTS, channel, accounts_pb2_grpc.AccountsServiceStub, credentials, timeout_s
        )

    async def close(self) -> None:
        await self._remote.close()

    async def export_member(self, member_id: str, *, purpose: str) -> MemberExport:
        request = accounts_pb2.ExportMemberDataRequest(name=f"members/{member_id}", purpose=purpose)
        response = await self._remote.call(
            lambda stub, timeout, metadata: stub.ExportMemberData(
                request, timeout=timeout, metadata=metadata
            )
        )
        return MemberExport(response)

    async def update_member(
        self,
        member_id: str,
        changes: Sequence[Change],
        *,
        request_id: str,
        validate_only: bool = False,
    ) -> None:
        """A correction's changes (plaintext: accounts encrypts what it stores). A refusal
        names the fields as the correction's (`correction.phone`)."""
        member = accounts_pb2.Member(name=f"members/{member_id}")
        for change in changes:
            setattr(member, change.field, change.value)
        request = accounts_pb2.UpdateMemberRequest(
            member=member,
            update_mask=field_mask_pb2.FieldMask(paths=[c.field for c in changes]),
            request_id=request_id,
            validate_only=validate_only,
        )
        try:
            await self._remote.call(
                lambda stub, timeout, metadata: stub.UpdateMember(
                    request, timeout=timeout, metadata=metadata
                )
            )
        except ServiceCallError as exc:
            raise exc.renamed(CORRECTION_FIELDS) from None

    async def erase_member(self, member_id: str, *, request_id: str, reason: str) -> None:
        request = accounts_pb2.EraseMemberDataRequest(
            name=f"members/{member_id}", request_id=request_id, reason=reason
        )
        await self._remote.call(
            lambda stub, timeout, metadata: stub.EraseMemberData(
                request, timeout=timeout, metadata=metadata
            )
        )


class PointsPort:
    def __init__(
        self, channel: ReconnectingChannel, credentials: ServiceCredentials, timeout_s: float
    ) -> None:
        self._remote = _Remote(
            POINTS, channel, points_pb2_grpc.PointsServiceStub, credentials, timeout_s
        )

    async def close(self) -> None:
        await self._remote.close()

    async def _ledger_page(
        self, member_id: str, page_size: int, page_token: str = "", timeout_s: float = 0.0
    ) -> points_pb2.MemberLedgerExport:
        request = points_pb2.ExportMemberLedgerRequest(
            member=f"members/{member_id}", page_size=page_size, page_token=page_token
        )
        return await self._remote.call(
            lambda stub, timeout, metadata: stub.ExportMemberLedger(
                request, timeout=timeout, metadata=metadata
            ),
            timeout_s,
        )

    async def stream_ledger(self, member_id: str) -> AsyncGenerator[LedgerPiece, None]:
        """The member's ledger as points' StreamMemberLedger sends it: the summary, the
        texts, the end; nothing for a member points never knew. A failure part-way is a
        transient ServiceCallError (the export is built again later)."""
        request = points_pb2.StreamMemberLedgerRequest(member=f"members/{member_id}")
        messages = self._remote.stream(
            lambda stub, timeout, metadata: stub.StreamMemberLedger(
                request, timeout=timeout, metadata=metadata
            ),
            EXPORT_TIMEOUT_S,
        )
        first = True
        try:
            async with contextlib.aclosing(messages):  # a stream left early is cancelled
                async for message in messages:
                    yield ledger_piece(message, first=first)
                    first = False
        except ServiceCallError as exc:
            if not (first and exc.code == Code.NOT_FOUND.value):
                raise

    async def ledger_has_entries(self, member_id: str) -> bool:
        try:
            page = await self._ledger_page(member_id, page_size=1)
        except ServiceCallError as exc:
            if exc.code == Code.NOT_FOUND.value:
                return False
            raise
        return bool(page.transactions)

    async def restrict_member(
        self, member_id: str, retention: Retention, *, request_id: str
    ) -> bool:
        """Keeps the ledger restricted; False when points never knew the member."""
        end = timestamp_pb2.Timestamp()
        end.FromDatetime(retention.retention_end)
        request = points_pb2.RestrictMemberRequest(
            member=f"members/{member_id}",
            request_id=request_id,
            legal_basis=retention.legal_basis,
            retention_end_time=end,
        )
        try:
            await self._remote.call(
                lambda stub, timeout, metadata: stub.RestrictMember(
                    request, timeout=timeout, metadata=metadata
                )
            )
        except ServiceCallError as exc:
            if exc.code == Code.NOT_FOUND.value:
                return False
            raise
        return True

    async def explain_rules(self, member_id: str) -> str:
        """The rules applying to the member, as JSON (points' ExplainMemberRules)."""
        request = points_pb2.ExplainMemberRulesRequest(member=f"members/{member_id}")
        response = await self._remote.call(
            lambda stub, timeout, metadata: stub.ExplainMemberRules(
                request, timeout=timeout, metadata=metadata
            )
        )
        return json_format.MessageToJson(response, indent=None)

    async def explain_transaction(self, name: str) -> str:
        """One transaction explained, as JSON (points' ExplainTransaction)."""
        request = points_pb2.ExplainTransactionRequest(name=name)
        response = await self._remote.call(
            lambda stub, timeout, metadata: stub.ExplainTransaction(
                request, timeout=timeout, metadata=metadata
            )
        )
        return json_format.MessageToJson(response, indent=None)


_SECTIONS = {
    points_pb2.LEDGER_SECTION_TRANSACTIONS_JSON: LedgerSection.TRANSACTIONS_JSON,
    points_pb2.LEDGER_SECTION_TRANSACTIONS_CSV: LedgerSection.TRANSACTIONS_CSV,
    points_pb2.LEDGER_SECTION_LOTS_JSON: LedgerSection.LOTS_JSON,
    points_pb2.LEDGER_SECTION_HOLDS_JSON: LedgerSection.HOLDS_JSON,
}


def ledger_piece(message: points_pb2.MemberLedgerChunk, *, first: bool) -> LedgerPiece:
    """One message of StreamMemberLedger as the bundle takes it; the summary comes first
    and only first. Anything else is a stream this version cannot read: not retried."""
    content = message.WhichOneof("content")
    if (content == "summary") != first:
        raise ServiceCallError(POINTS, LEDGER_STREAM_UNREADABLE, transient=False)
    if content == "summary":
        return LedgerSummary(message.summary)
    if content == "end":
        e = message.end
        return LedgerEnd(e.transactions, e.lots, e.holds, e.text_bytes)
    section = _SECTIONS.get(message.text.section) if content == "text" else None
    if section is None:
        raise ServiceCallError(POINTS, LEDGER_STREAM_UNREADABLE, transient=False)
    return LedgerText(section, message.text.data)
