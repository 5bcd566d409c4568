"""REST/JSON to gRPC: routes from the protos' `google.api.http` rules, API keys, scopes,
rate limits, bounded bodies and deadlines. No business rules: the services decide."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
from aiohttp import web
from google.protobuf import message

from gateway import errors
from gateway.caller_tokens import CallerTokens
from gateway.http_rules import Route, RouteTable
from gateway.rate_limit import KeyLimiter, retry_after_header
from gateway.transcode import (
    BodyTooLargeError,
    TranscodeError,
    apply_idempotency_key,
    build_request,
    response_json,
)
from services.runtime.access import METHOD_SCOPES, ROLE_SCOPES
from services.runtime.context import new_request_id

log = logging.getLogger("membership.gateway.rest")

JSON = "application/json"
MAX_QUERY_PARAMS = 100
# RFC 6750 §3: no credentials -> the bare challenge; a key that fails -> invalid_token
CHALLENGE_MISSING = "Bearer"
CHALLENGE_INVALID = 'Bearer error="invalid_token"'
CHALLENGE_SCOPE = 'Bearer error="insufficient_scope"'


@dataclass(frozen=True)
class Principal:
    """Who an API key is: the name the services see and the role that bounds it."""

    subject: str
    role: str
    key_id: str


class Authenticator(Protocol):
    async def __call__(self, api_key: str) -> Principal:
        """Raises PermissionError for any key that must not pass (unknown, revoked, expired)."""
        ...


@dataclass(frozen=True)
class RestSettings:
    request_timeout_s: float
    max_body_bytes: int


def _reply(status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=payload, content_type=JSON, headers=headers)


def error_response(reply: errors.Answer, extra: Mapping[str, str] | None = None) -> web.Response:
    return _reply(reply.status, reply.body, {**reply.headers, **(extra or {})})


def _error(
    code: grpc.StatusCode,
    reason: str,
    text: str,
    violations: list[tuple[str, str]] | None = None,
    *,
    status: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    reply = errors.gateway_error(code, reason, text, violations or [], status=status)
    return error_response(reply, headers)


def allowed(route: Route, role: str) -> bool:
    """The access table's answer, so that a call the service would refuse never leaves."""
    scope = METHOD_SCOPES.get(route.rpc_path)
    return scope is not None and scope in ROLE_SCOPES.get(role, frozenset())


class RestGateway:
    def __init__(
        self,
        table: RouteTable,
        channels: Mapping[str, grpc.aio.Channel],
        authenticate: Authenticator,
        tokens: CallerTokens,
        limiter: KeyLimiter,
        settings: RestSettings,
    ) -> None:
        self._table = table
        self._channels = channels
        self._authenticate = authenticate
        self._tokens = tokens
        self._limiter = limiter
        self._settings = settings

    @property
    def authenticate(self) -> Authenticator:
        return self._authenticate

    @property
    def max_body_bytes(self) -> int:
        return self._settings.max_body_bytes

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # still percent-encoded: a `%2F` inside a resource id must not split a segment
        path = request.raw_path.partition("?")[0]
        match = self._table.match(request.method, path)
        if match is None:
            return self._unrouted(path)
        principal = await self._principal(request)
        if isinstance(principal, web.Response):
            return principal
        refused = self._refused(match.route, principal)
        if refused is not None:
            return refused
        try:
            body = await request.read()
            query = {key: request.query.getall(key) for key in request.query}
            if len(request.query) > MAX_QUERY_PARAMS:
                raise TranscodeError("too many query parameters", [])
            call = build_request(match, query, body, max_body_bytes=self.max_body_bytes)
            key = request.headers.get("Idempotency-Key", "")
            if key:
                apply_idempotency_key(call, key)
        except (BodyTooLargeError, web.HTTPRequestEntityTooLarge):
            # INVALID_ARGUMENT, not RESOURCE_EXHAUSTED: the same body will never fit, a
            # client must not retry it
            return _error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "BODY_TOO_LARGE",
                "the request body is too large",
                status=413,
            )
        except TranscodeError as exc:
            return _error(
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", str(exc), exc.violations
            )
        return await self._forward(match.route, call, principal, request)

    def _unrouted(self, path: str) -> web.Response:
        methods = self._table.allowed_methods(path)
        if not methods:
            return _error(grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND", "no such route")
        return _error(
            grpc.StatusCode.UNIMPLEMENTED,
            "METHOD_NOT_ALLOWED",
            "method not allowed here",
            status=405,
            headers={"Allow": ", ".join(sorted(methods))},
        )

    async def _principal(self, request: web.Request) -> Principal | web.Response:
        header = request.headers.get("Authorization", "")
        scheme, _, api_key = header.partition(" ")
        if scheme.lower() != "bearer" or not api_key:
            return _error(
                grpc.StatusCode.UNAUTHENTICATED,
                "API_KEY_MISSING",
                "an API key is required",
                headers={"WWW-Authenticate": CHALLENGE_MISSING},
            )
        try:
            return await self._authenticate(api_key.strip())
        except PermissionError:
            return _error(
                grpc.StatusCode.UNAUTHENTICATED,
                "API_KEY_INVALID",
                "the API key is not valid",
                headers={"WWW-Authenticate": CHALLENGE_INVALID},
            )

    def _refused(self, route: Route, principal: Principal) -> web.Response | None:
        if not allowed(route, principal.role):
            return _error(
                grpc.StatusCode.PERMISSION_DENIED,
                "SCOPE_MISSING",
                f"the {principal.role} role may not call {route.method}",
                headers={"WWW-Authenticate": CHALLENGE_SCOPE},
            )
        # the same bucket as the gRPC pass-through's: one per key, whichever door
        wait_s = self._limiter.wait_s(principal.subject)
        if wait_s > 0:
            return _error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                "too many requests",
                headers={"Retry-After": retry_after_header(wait_s)},
            )
        return None

    async def _forward(
        self, route: Route, call: message.Message, principal: Principal, request: web.Request
    ) -> web.Response:
        request_id = request.headers.get("X-Request-Id", "")[:64] or new_request_id()
        metadata = (
            ("authorization", f"Bearer {self._tokens.token(principal.subject, principal.role)}"),
            ("x-request-id", request_id),
        )
        rpc = self._channels[route.service].unary_unary(
            route.rpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=route.response_class.FromString,
        )
        try:
            response = await rpc(call, timeout=self._settings.request_timeout_s, metadata=metadata)
        except grpc.aio.AioRpcError as err:
            # carries Retry-After when the backend said when to retry (RetryInfo)
            return error_response(errors.from_rpc_error(err), {"X-Request-Id": request_id})
        except asyncio.CancelledError:
            raise
        return _reply(200, response_json(response), {"X-Request-Id": request_id})


def application(
    gateway: RestGateway, extra_routes: Callable[[web.Application], None]
) -> web.Application:
    app = web.Application(client_max_size=gateway._settings.max_body_bytes)
    extra_routes(app)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    return app
