"""How the gRPC pass-through fails a call: the backend's own status unchanged, or the
gateway's (backend unreachable, key over its rate, a bug) as google.rpc.Status with an
ErrorInfo in domain `gateway.membership`."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import NoReturn

import grpc
from grpc_status import rpc_status

from gateway.errors import DOMAIN, rate_limited_status
from gateway.proxy_metadata import STATUS_DETAILS_KEY, Metadata, to_client
from gateway.proxy_routes import ProxyRoute
from services.runtime.errors import DomainError, unavailable
from services.runtime.status import grpc_code, to_rpc_status

log = logging.getLogger("membership.gateway.grpc")


@dataclass(frozen=True)
class Failure:
    code: grpc.StatusCode
    details: str
    trailing_metadata: Metadata


class RateLimited(Exception):
    """The caller's key has no token left; `wait_s` until it has one."""

    def __init__(self, wait_s: float) -> None:
        super().__init__("rate limited")
        self.wait_s = wait_s


def failure_of(route: ProxyRoute, exc: Exception, request_id: str) -> Failure:
    if isinstance(exc, RateLimited):
        # RESOURCE_EXHAUSTED with RetryInfo, what REST says with 429 and Retry-After
        limited = rpc_status.to_status(rate_limited_status(exc.wait_s))
        trailing = to_client(limited.trailing_metadata, request_id)
        return Failure(limited.code, limited.details, trailing)
    if isinstance(exc, grpc.aio.AioRpcError):
        if from_backend(exc):
            trailing = to_client(exc.trailing_metadata(), request_id)
            return Failure(exc.code(), exc.details() or "", trailing)
        # the backend was not reached: say so without its address or the transport's text
        exc = dataclasses.replace(
            unavailable("BACKEND_UNAVAILABLE", f"{route.service} is unavailable"),
            metadata={"service": route.service},
        )
    if not isinstance(exc, DomainError):
        log.exception("unhandled error", extra={"fields": {"method": route.path}})
        exc = DomainError.internal("internal error")
    status = to_rpc_status(exc, DOMAIN)
    return Failure(grpc_code(exc), status.details, to_client(status.trailing_metadata, request_id))


def from_backend(err: grpc.aio.AioRpcError) -> bool:
    """False for an UNAVAILABLE that gRPC made because no backend answered (connection
    refused, no address, connection lost); the services' own errors carry status details."""
    if err.code() != grpc.StatusCode.UNAVAILABLE:
        return True
    return any(k == STATUS_DETAILS_KEY for k, _ in err.trailing_metadata() or ())


async def abort(context: grpc.aio.ServicerContext, failure: Failure) -> NoReturn:
    await context.abort(failure.code, failure.details, failure.trailing_metadata)
    raise AssertionError("context.abort returned")  # it raises AbortError
