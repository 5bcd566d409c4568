"""Reading the google.rpc.Status details (ErrorInfo, BadRequest) of a failed gRPC call.

    err = await rpc_error(stub.RegisterMember(request, metadata=...))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.fields == {"phone"}

or in one step: `await expect_error(call, grpc.StatusCode.ALREADY_EXISTS, reason="PHONE_TAKEN")`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class RpcError:
    """What a client sees of a failed call: code, message and the structured details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    # (field, description) pairs of BadRequest.field_violations, in order
    violations: tuple[tuple[str, str], ...] = ()
    has_status_details: bool = False
    # google.rpc.RetryInfo's retry_delay, when the status carries one
    retry_delay_s: float | None = None

    @property
    def fields(self) -> set[str]:
        """Names of the fields in BadRequest.field_violations."""
        return {f for f, _ in self.violations}

    def describe(self) -> str:
        return (
            f"{self.code.name} reason={self.reason!r} domain={self.domain!r}"
            f" fields={sorted(self.fields)} message={self.message!r}"
        )


def _status_details(trailing: object) -> bytes | None:
    for key, value in trailing or ():  # type: ignore[attr-defined]
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return value
    return None


def parse_rpc_error(err: grpc.aio.AioRpcError) -> RpcError:
    """Decodes the code and the google.rpc.Status details carried in trailing metadata."""
    raw = _status_details(err.trailing_metadata())
    if raw is None:
        return RpcError(code=err.code(), message=err.details() or "")
    status = status_pb2.Status.FromString(raw)
    reason, domain, metadata = "", "", {}
    violations: list[tuple[str, str]] = []
    retry_delay_s: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay_s = retry.retry_delay.ToNanoseconds() / 1e9
    return RpcError(
        code=err.code(),
        message=status.message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        violations=tuple(violations),
        has_status_details=True,
        retry_delay_s=retry_delay_s,
    )


async def rpc_error(call: Awaitable[object]) -> RpcError:
    """Awaits a call that must fail and returns its parsed error."""
    try:
        result = await call
    except grpc.aio.AioRpcError as err:
        return parse_rpc_error(err)
    raise AssertionError(f"expected the call to fail, it returned {result!r}")


async def expect_error(
    call: Awaitable[object],
    code: grpc.StatusCode,
    *,
    reason: str | None = None,
    fields: set[str] | None = None,
) -> RpcError:
    """Awaits a call that must fail with `code` (and, when given, that reason and exactly
    those field violations); returns the parsed error for further checks."""
    err = await rpc_error(call)
    assert err.code == code, f"expected {code.name}, got {err.describe()}"
    if reason is not None:
        assert err.reason == reason, f"expected reason {reason}, got {err.describe()}"
    if fields is not None:
        assert err.fields == fields, f"expected violations of {sorted(fields)}: {err.describe()}"
    return err
