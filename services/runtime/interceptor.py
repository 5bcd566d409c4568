"""One server interceptor: request id, caller token, scope check, error mapping, access log."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from services.runtime import access
from services.runtime.context import (
    MAX_REQUEST_ID_LEN,
    new_request_id,
    set_caller,
    set_request_id,
)
from services.runtime.db import database_failure
from services.runtime.errors import (
    Code,
    DomainError,
    bad_field,
    permission_denied,
    unauthenticated,
)
from services.runtime.identity import Caller, InvalidToken, TokenVerifier
from services.runtime.metrics import observe_rpc
from services.runtime.status import grpc_code, to_rpc_status

log = logging.getLogger("membership.rpc")

Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
StreamHandler = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


# stands in for a request whose bytes did not parse, so that the caller is authenticated
# first and then told INVALID_ARGUMENT (gRPC itself would answer UNKNOWN)
UNPARSEABLE = object()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    parse = deserializer

    def deserialize(raw: bytes) -> Any:
        try:
            return parse(raw)
        except Exception:  # DecodeError, or invalid UTF-8 in a string field
            return UNPARSEABLE

    return deserialize


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


# gRPC's retry pushback: a negative value tells a client's retry policy not to retry
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def _trailing(error: DomainError, status: grpc.Status) -> Any:
    """A refusal that says when to try again (RetryInfo) is for the end caller to retry:
    a channel's transparent retry a few milliseconds later would only repeat it."""
    if error.retry_after_s is None:
        return status.trailing_metadata
    return (*status.trailing_metadata, (PUSHBACK_KEY, "-1"))


class ServiceInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, verifier: TokenVerifier, service: str) -> None:
        self._verifier = verifier
        self._service = service
        self._domain = f"{service}.membership"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or access.is_public(method):
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:  # a server stream (StreamMemberLedger)
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        # no API method streams requests; such a method is closed
        return grpc.unary_unary_rpc_method_handler(self._closed)

    async def _closed(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "method not available")

    def _authenticate(self, metadata: dict[str, str]) -> Caller:
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("TOKEN_MISSING", "missing bearer token")
        try:
            return self._verifier.verify(token.strip())
        except InvalidToken as exc:
            raise unauthenticated("TOKEN_INVALID", str(exc)) from exc

    @staticmethod
    def _authorize(method: str, caller: Caller) -> None:
        scope = access.required_scope(method)
        if scope is None or not caller.has_scope(scope):
            raise permission_denied("SCOPE_MISSING", f"role {caller.role} may not call {method}")

    def _unhandled(self, method: str, exc: Exception) -> DomainError:
        """A database that timed out or is out of reach is the caller's retryable error;
        anything else is a bug: INTERNAL, with the stack in the log only."""
        failure = database_failure(exc)
        if failure is not None:
            log.warning(
                "database failure",
                extra={"fields": {"method": method, "error_type": type(exc).__name__}},
            )
            return failure
        log.exception("unhandled error", extra={"fields": {"method": method}})
        return DomainError(Code.INTERNAL, "INTERNAL", "internal error")

    @contextlib.asynccontextmanager
    async def _guarded(
        self, method: str, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """What every call goes through, unary or streaming: request id, caller token and
        scope before the handler runs; its errors as google.rpc.Status; the metric and the
        access log line once it ended."""
        metadata = _metadata(context)
        rid = metadata.get("x-request-id", "")[:MAX_REQUEST_ID_LEN] or new_request_id()
        set_request_id(rid)
        set_caller(None)
        started = time.perf_counter()
        outcome, role = "OK", ""
        try:
            caller = self._authenticate(metadata)
            role = caller.role
            self._authorize(method, caller)
            set_caller(caller)
            if request is UNPARSEABLE:
                raise bad_field("request", "is not a valid message of this method")
            yield
        except DomainError as err:
            outcome = err.code.value
            status = to_rpc_status(err, self._domain)
            await context.abort(grpc_code(err), status.details, _trailing(err, status))
        except grpc.aio.AbortError:
            outcome = "ABORTED_BY_HANDLER"
            raise
        except Exception as exc:
            error = self._unhandled(method, exc)
            outcome = error.code.value
            status = to_rpc_status(error, self._domain)
            await context.abort(grpc_code(error), status.details, status.trailing_metadata)
        finally:
            elapsed_s = time.perf_counter() - started
            observe_rpc(self._service, method, outcome, elapsed_s)
            log.info(
                "rpc",
                extra={
                    "fields": {
                        "method": method,
                        "code": outcome,
                        "role": role,
                        "duration_ms": round(elapsed_s * 1000, 2),
                    }
                },
            )

    def _wrap(self, method: str, inner: Handler) -> Handler:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with self._guarded(method, request, context):
                return await inner(request, context)

        return handle

    def _wrap_stream(self, method: str, inner: StreamHandler) -> StreamHandler:
        """A server stream: an error after some messages still ends it with its status, so
        the caller never takes a cut-off stream for a whole one."""

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with self._guarded(method, request, context):
                async for response in inner(request, context):
                    yield response

        return handle
