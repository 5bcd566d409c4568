"""The REST error mapping: `code` in the body is the HTTP status, RetryInfo -> Retry-After."""

from __future__ import annotations

import json

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway import errors


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNIMPLEMENTED, 405),
        (grpc.StatusCode.INVALID_ARGUMENT, 413),
        (grpc.StatusCode.UNAUTHENTICATED, None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    ],
)
def test_the_body_code_is_the_http_status(code: grpc.StatusCode, status: int | None) -> None:
    answer = errors.gateway_error(code, "REASON", "text", status=status)
    assert answer.status == (status or errors.http_status(code))
    body = json.loads(answer.body)["error"]
    assert (body["code"], body["status"]) == (answer.status, code.name)


@pytest.mark.parametrize(
    ("code", "delay_s", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, 2.2, 3),
        (grpc.StatusCode.UNAVAILABLE, 0.0, 1),
        (grpc.StatusCode.UNAVAILABLE, None, errors.DEFAULT_UNAVAILABLE_RETRY_S),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 0.001, 1),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, None, None),
        (grpc.StatusCode.ABORTED, 4.0, 4),
        (grpc.StatusCode.FAILED_PRECONDITION, None, None),
        (grpc.StatusCode.UNAVAILABLE, 10**9, errors.MAX_RETRY_AFTER_S),
    ],
)
def test_retry_after_seconds(
    code: grpc.StatusCode, delay_s: float | None, expected: int | None
) -> None:
    assert errors.retry_after_s(code, delay_s) == expected


def test_the_rate_limited_status_carries_error_info_and_retry_info() -> None:
    status = errors.rate_limited_status(0.0123)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    first, second = status.details
    assert first.Unpack(info) and second.Unpack(retry)
    assert (info.reason, info.domain) == ("RATE_LIMITED", "gateway.membership")
    # rounded up to the millisecond: waiting that long finds a token
    assert retry.retry_delay.ToMilliseconds() == 13
    assert errors.retry_delay_s(status) == pytest.approx(0.013)
