"""gRPC statuses as HTTP responses, the way grpc-gateway maps them, with the body
`{"error": {"code", "status", "message", "details"}}` carrying the service's ErrorInfo."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import json_format, message
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "gateway.membership"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# the types a service attaches; imported so that their Any payloads can be printed
_KNOWN_DETAILS = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def _details_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[dict[str, Any]]:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
                return [json_format.MessageToDict(d) for d in status.details]
            except (message.DecodeError, json_format.Error, TypeError):
                return []  # unreadable details: the code and message still go out
    return []


def body(code: grpc.StatusCode, text: str, details: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": http_status(code),
                "status": code.name,
                "message": text,
                "details": details,
            }
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def from_rpc_error(err: grpc.aio.AioRpcError) -> tuple[int, bytes]:
    """The HTTP status and body of a service's error (its message and details as sent)."""
    return http_status(err.code()), body(
        err.code(), err.details() or "", _details_of(err.trailing_metadata())
    )


def gateway_error(
    code: grpc.StatusCode,
    reason: str,
    text: str,
    violations: Sequence[tuple[str, str]] = (),
    metadata: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """An error the gateway itself answers (bad JSON, no key, too many requests)."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": DOMAIN,
            "metadata": metadata or {},
        }
    ]
    if violations:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [
                    {"field": field, "description": description}
                    for field, description in violations
                ],
            }
        )
    return http_status(code), body(code, text, details)
