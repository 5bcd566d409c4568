"""google.rpc.Status with ErrorInfo and BadRequest for domain errors."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.errors import DomainError

_CODES: dict[str, tuple[grpc.StatusCode, int]] = {
    "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    "ALREADY_EXISTS": (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    "FAILED_PRECONDITION": (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    "PERMISSION_DENIED": (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    "UNAUTHENTICATED": (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    "UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    "RESOURCE_EXHAUSTED": (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    "ABORTED": (grpc.StatusCode.ABORTED, code_pb2.ABORTED),
    "DEADLINE_EXCEEDED": (grpc.StatusCode.DEADLINE_EXCEEDED, code_pb2.DEADLINE_EXCEEDED),
    "DATA_LOSS": (grpc.StatusCode.DATA_LOSS, code_pb2.DATA_LOSS),
    "INTERNAL": (grpc.StatusCode.INTERNAL, code_pb2.INTERNAL),
}


def rpc_code_number(error: DomainError) -> int:
    """The google.rpc.Code number, for errors reported inside a response (batch items)."""
    return _CODES[error.code.value][1]


def grpc_code(error: DomainError) -> grpc.StatusCode:
    return _CODES[error.code.value][0]


def to_rpc_status(error: DomainError, domain: str) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=domain, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    if error.retry_after_s is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
        details.append(_pack(retry))
    status = status_pb2.Status(
        code=_CODES[error.code.value][1], message=error.message, details=details
    )
    return rpc_status.to_status(status)


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
