"""gRPC statuses as HTTP responses, the way grpc-gateway maps them, with the body
`{"error": {"code", "status", "message", "details"}}` carrying the service's ErrorInfo.

`code` is always the HTTP status of the response it is in (405, 413 included), so a client
reading only the body and one reading only the status line agree; `status` names the gRPC
code that fits. A backend status carrying a google.rpc.RetryInfo becomes `Retry-After`
(whole seconds, rounded up), and UNAVAILABLE without one still gets `Retry-After: 1`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format, message
from google.rpc import code_pb2, error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DOMAIN = "gateway.membership"
# a transient outage that named no delay: long enough not to hammer, short enough to recover
DEFAULT_UNAVAILABLE_RETRY_S = 1
# a backend's RetryInfo is trusted up to this: a bogus delay must not park clients for days
MAX_RETRY_AFTER_S = 3600

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
_KNOWN_DETAILS = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
)


@dataclass(frozen=True)
class Answer:
    """One answer, mostly an error: HTTP status, JSON body, extra headers, and the gRPC code
    it stands for (what decides, e.g., whether a webhook answer is kept for replays)."""

    status: int
    body: bytes
    code: grpc.StatusCode
    headers: Mapping[str, str] = field(default_factory=dict)


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def _status_of(metadata: Sequence[tuple[str, str | bytes]] | None) -> status_pb2.Status | None:
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except message.DecodeError:
                return None  # unreadable details: the code and message still go out
    return None


def _details_json(status: status_pb2.Status | None) -> list[dict[str, Any]]:
    if status is None:
        return []
    try:
        return [json_format.MessageToDict(d) for d in status.details]
    except (json_format.Error, TypeError):
        return []


def retry_delay_s(status: status_pb2.Status | None) -> float | None:
    """The RetryInfo's delay in seconds, if the status carries one."""
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                delay_s: float = info.retry_delay.ToTimedelta().total_seconds()
                return max(0.0, delay_s)
    return None


def retry_after_s(code: grpc.StatusCode, delay_s: float | None) -> int | None:
    """`Retry-After` seconds for an answer: from RetryInfo whatever the code, rounded up and
    at least 1; UNAVAILABLE without one gets the default; anything else none."""
    if delay_s is not None:
        return min(MAX_RETRY_AFTER_S, max(1, math.ceil(delay_s)))
    if code == grpc.StatusCode.UNAVAILABLE:
        return DEFAULT_UNAVAILABLE_RETRY_S
    return None


def body(status: int, code: grpc.StatusCode, text: str, details: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"error": {"code": status, "status": code.name, "message": text, "details": details}},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def from_rpc_error(err: grpc.aio.AioRpcError) -> Answer:
    """The answer to a service's error (its message and details as sent)."""
    code = err.code()
    status = http_status(code)
    rpc = _status_of(err.trailing_metadata())
    retry_s = retry_after_s(code, retry_delay_s(rpc))
    headers = {"Retry-After": str(retry_s)} if retry_s is not None else {}
    payload = body(status, code, err.details() or "", _details_json(rpc))
    return Answer(status, payload, code, headers)


def gateway_error(
    code: grpc.StatusCode,
    reason: str,
    text: str,
    violations: Sequence[tuple[str, str]] = (),
    metadata: dict[str, str] | None = None,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Answer:
    """An error the gateway itself answers (bad JSON, no key, too many requests). `status`:
    the HTTP status when it is not the code's usual one (405, 413)."""
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
    http = http_status(code) if status is None else status
    return Answer(http, body(http, code, text, details), code, dict(headers or {}))


def rate_limited_status(wait_s: float) -> status_pb2.Status:
    """The gateway's RESOURCE_EXHAUSTED for a key over its rate, for gRPC callers: ErrorInfo
    RATE_LIMITED and a RetryInfo with the wait (to the millisecond, rounded up)."""
    info = error_details_pb2.ErrorInfo(reason="RATE_LIMITED", domain=DOMAIN)
    wait_ms = max(1, math.ceil(wait_s * 1000))
    delay = duration_pb2.Duration(seconds=wait_ms // 1000, nanos=(wait_ms % 1000) * 1_000_000)
    retry = error_details_pb2.RetryInfo(retry_delay=delay)
    packed = [any_pb2.Any(), any_pb2.Any()]
    packed[0].Pack(info)
    packed[1].Pack(retry)
    return status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message="too many requests", details=packed
    )
