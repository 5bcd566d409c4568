"""What privacy needs from accounts and points to fulfil data-subject requests, over their
internal RPCs (like connectors: privacy never reads their tables).

Every call has a deadline and this service's own token. A failure is a `ServiceCallError`
that says whether retrying later can help (the service was down or slow) or not (it
refused: a conflict, bad data), so fulfilment knows whether to schedule a retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, json_format, message, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from membership.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from membership.points.v1 import points_pb2, points_pb2_grpc

from services.privacy.data_requests import CORRECTABLE
from services.runtime.clients import ReconnectingChannel, ServiceCredentials
from services.runtime.errors import DomainError, FieldViolation, invalid_argument, unavailable

LEDGER_PAGE_SIZE = 10_000
# 100 pages of 10,000: a million transactions; more is refused rather than exported partly
MAX_LEDGER_PAGES = 100
EXPORT_TIMEOUT_S = 30.0
STUBS: dict[str, Callable[[grpc.aio.Channel], object]] = {
    "accounts": accounts_pb2_grpc.AccountsServiceStub,
    "points": points_pb2_grpc.PointsServiceStub,
}
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

# refusals of a correction's check that depend on what may change before the approval
ACCEPTED_AT_CREATION = frozenset({"FAILED_PRECONDITION", "ALREADY_EXISTS", "NOT_FOUND"})

Violation = tuple[str, str]  # (field, description): rules, never values (AIP-193)


class ServiceCallError(Exception):
    """A call to another service failed; `transient`: retrying later may succeed. `reason`
    and `violations` come from the google.rpc.Status the service attached, if any."""

    def __init__(
        self,
        service: str,
        code: str,
        transient: bool,
        reason: str = "",
        violations: Sequence[Violation] = (),
    ) -> None:
        super().__init__(f"{service}: {code}")
        self.service = service
        self.code = code
        self.transient = transient
        self.reason = reason
        self.violations = tuple(violations)

    @property
    def summary(self) -> str:
        """For the request's step record: service, status code and reason, never a message."""
        reason = f" {self.reason}" if self.reason and self.reason != self.code else ""
        return f"{self.service}: {self.code}{reason}"

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for f, _ in self.violations))

    def renamed(self, names: dict[str, str]) -> ServiceCallError:
        """The same failure with the callee's field paths named as the caller knows them."""
        violations = [(names.get(f, f), d) for f, d in self.violations]
        return ServiceCallError(self.service, self.code, self.transient, self.reason, violations)


def _correction_refused(exc: ServiceCallError) -> DomainError:
    """Accounts' violations as CreateDataRequest's; any other field refused is privacy's
    own mistake in building the check."""
    known = {f"correction.{name}" for name in CORRECTABLE}
    if not exc.violations or any(f not in known for f, _ in exc.violations):
        return DomainError.internal("accounts refused the correction check's request")
    return invalid_argument([FieldViolation(f"data_request.{f}", d) for f, d in exc.violations])


def _refusal(err: grpc.aio.AioRpcError) -> tuple[str, list[Violation]]:
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
            violations += [(v.field, v.description) for v in bad.field_violations]
    return reason, violations


class MemberServices:
    def __init__(
        self,
        accounts: ReconnectingChannel,
        points: ReconnectingChannel,
        credentials: ServiceCredentials,
        timeout_s: float,
    ) -> None:
        # reconnecting channels: after an outage the next attempt connects at once instead
        # of waiting out a channel's own reconnection backoff (up to two minutes)
        self._channels = {"accounts": accounts, "points": points}
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def _call(
        self, service: str, method: str, request: message.Message, timeout_s: float = 0.0
    ) -> Any:
        """`service`'s RPC `method`; the caller knows its response type."""
        metadata = self._credentials.metadata()
        stub = STUBS[service]

        def call(channel: grpc.aio.Channel) -> Awaitable[Any]:
            rpc: Callable[..., Awaitable[Any]] = getattr(stub(channel), method)
            return rpc(request, timeout=timeout_s or self._timeout_s, metadata=metadata)

        try:
            return await self._channels[service].call(call)
        except grpc.aio.AioRpcError as err:
            reason, violations = _refusal(err)
            transient = err.code() in TRANSIENT
            raise ServiceCallError(
                service, err.code().name, transient, reason, violations
            ) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def export_member(
        self, member_id: str, purpose: str
    ) -> accounts_pb2.ExportMemberDataResponse:
        request = accounts_pb2.ExportMemberDataRequest(name=f"members/{member_id}", purpose=purpose)
        response: accounts_pb2.ExportMemberDataResponse = await self._call(
            "accounts", "ExportMemberData", request
        )
        return response

    async def ledger_pages(self, member_id: str) -> list[points_pb2.MemberLedgerExport]:
        """Every page of the member's ledger; an unknown member has none."""
        pages: list[points_pb2.MemberLedgerExport] = []
        token = ""
        for _ in range(MAX_LEDGER_PAGES):
            request = points_pb2.ExportMemberLedgerRequest(
                member=f"members/{member_id}", page_size=LEDGER_PAGE_SIZE, page_token=token
            )
            try:
                page = await self._call(
                    "points",
                    "ExportMemberLedger",
                    request,
                    EXPORT_TIMEOUT_S,
                )
            except ServiceCallError as exc:
                if exc.code == "NOT_FOUND" and not pages:
                    return []
                raise
            pages.append(page)
            token = page.next_page_token
            if not token:
                return pages
        raise ServiceCallError("points", "LEDGER_TOO_LARGE", transient=False)

    async def ledger_has_entries(self, member_id: str) -> bool:
        request = points_pb2.ExportMemberLedgerRequest(member=f"members/{member_id}", page_size=1)
        try:
            page = await self._call("points", "ExportMemberLedger", request)
        except ServiceCallError as exc:
            if exc.code == "NOT_FOUND":
                return False
            raise
        return bool(page.transactions)

    async def update_member(
        self,
        member_id: str,
        changes: Sequence[tuple[str, str]],
        request_id: str,
        validate_only: bool = False,
    ) -> None:
        """A correction's changes (plaintext: accounts encrypts what it stores). A refusal
        names the fields as the correction's (`correction.phone`)."""
        member = accounts_pb2.Member(name=f"members/{member_id}")
        for field_name, value in changes:
            setattr(member, field_name, value)
        request = accounts_pb2.UpdateMemberRequest(
            member=member,
            update_mask=field_mask_pb2.FieldMask(paths=[f for f, _ in changes]),
            request_id=request_id,
            validate_only=validate_only,
        )
        try:
            await self._call("accounts", "UpdateMember", request)
        except ServiceCallError as exc:
            raise exc.renamed(CORRECTION_FIELDS) from None

    async def check_correction(
        self, member_id: str, changes: Sequence[tuple[str, str]], request_id: str
    ) -> None:
        """At CreateDataRequest: accounts checks the values with the rules of any update
        (UpdateMember, validate_only: nothing written, nothing recorded), so that privacy
        neither imports nor copies them. A value refused is INVALID_ARGUMENT naming the
        request's field; accounts out of reach is UNAVAILABLE (nothing was recorded, a retry
        is safe). What can change before the approval (the member's status, a phone another
        member holds) is for the fulfilment to meet and the officer to judge."""
        try:
            await self.update_member(member_id, changes, request_id, validate_only=True)
        except ServiceCallError as exc:
            if exc.transient:
                raise unavailable(
                    "ACCOUNTS_UNAVAILABLE", "accounts could not check the correction; retry"
                ) from None
            if exc.code == "INVALID_ARGUMENT":
                raise _correction_refused(exc) from None
            if exc.code not in ACCEPTED_AT_CREATION:
                # privacy's own setup (its token, its scope): no caller can do anything
                raise DomainError.internal("accounts refused to check a correction") from None

    async def erase_member(self, member_id: str, request_id: str, reason: str) -> None:
        request = accounts_pb2.EraseMemberDataRequest(
            name=f"members/{member_id}", request_id=request_id, reason=reason
        )
        await self._call("accounts", "EraseMemberData", request)

    async def restrict_ledger(
        self, member_id: str, request_id: str, legal_basis: str, retention_end: datetime
    ) -> bool:
        """Keeps the ledger restricted; False when points never knew the member."""
        end = timestamp_pb2.Timestamp()
        end.FromDatetime(retention_end)
        request = points_pb2.RestrictMemberRequest(
            member=f"members/{member_id}",
            request_id=request_id,
            legal_basis=legal_basis,
            retention_end_time=end,
        )
        try:
            await self._call("points", "RestrictMember", request)
        except ServiceCallError as exc:
            if exc.code == "NOT_FOUND":
                return False
            raise
        return True

    async def explain_rules(self, member_id: str) -> str:
        """The rules applying to the member, as JSON (points' ExplainMemberRules)."""
        request = points_pb2.ExplainMemberRulesRequest(member=f"members/{member_id}")
        response = await self._call("points", "ExplainMemberRules", request)
        return json_format.MessageToJson(response, indent=None)

    async def explain_transaction(self, name: str) -> str:
        request = points_pb2.ExplainTransactionRequest(name=name)
        response = await self._call("points", "ExplainTransaction", request)
        return json_format.MessageToJson(response, indent=None)
