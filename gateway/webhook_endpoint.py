"""`POST /v1/webhooks/payments` and `/v1/webhooks/refunds`: settlement webhooks, signed with
HMAC-SHA256 over timestamp and body. Nothing reaches a service before the signature, the
timestamp window and the client are checked.

A delivery's answer is kept (by client and signature) only when no retry could change it:
success, INVALID_ARGUMENT (the same bytes stay invalid) and ALREADY_EXISTS (the payment id was
used for another payment). A replay of such a delivery gets the kept answer without reaching
points. Anything that depends on state or on a passing condition (FAILED_PRECONDITION,
NOT_FOUND of a refund's payment that has not arrived yet, UNAVAILABLE, RESOURCE_EXHAUSTED,
ABORTED, DEADLINE_EXCEEDED, any 5xx) is not kept, so the sender's identical retry reaches
points again; the payment (refund) id is points' idempotency key, so that retry cannot credit
twice. The decision is by the gRPC code the answer stands for, not by its HTTP status (400
is both INVALID_ARGUMENT, final, and FAILED_PRECONDITION, not final)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import asyncpg
import grpc
from aiohttp import web

from gateway import errors, store, webhooks
from gateway.caller_tokens import CallerTokens
from gateway.errors import Answer
from gateway.http_rules import Route, RouteMatch, RouteTable
from gateway.transcode import TranscodeError, build_request, response_json

log = logging.getLogger("membership.gateway.webhooks")

CLIENT_HEADER = "X-Client-Id"
KINDS = {
    "payments": "/membership.points.v1.PointsService/SettlePayment",
    "refunds": "/membership.points.v1.PointsService/RefundPayment",
}
MAX_WEBHOOK_BYTES = 64 * 1024
# answers a retry of the same bytes cannot change: kept for replays (see the module doc)
FINAL_CODES = frozenset(
    {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS}
)
# RFC 7235: a 401 names how to authenticate; these webhooks sign, they carry no token
CHALLENGE = 'Signature realm="webhooks"'


def _json(status: int, payload: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=payload, content_type="application/json", headers=headers
    )


def _answer(reply: Answer) -> web.Response:
    return _json(reply.status, reply.body, reply.headers)


class WebhookEndpoint:
    def __init__(
        self,
        pool: asyncpg.Pool,
        secrets: Mapping[str, tuple[bytes, ...]],
        table: RouteTable,
        points: grpc.aio.Channel,
        tokens: CallerTokens,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._secrets = secrets
        self._routes = {kind: route_of(table, rpc) for kind, rpc in KINDS.items()}
        self._points = points
        self._tokens = tokens
        self._timeout_s = timeout_s
        self._clock = clock

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/webhooks/{kind:payments|refunds}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        body = await request.content.read(MAX_WEBHOOK_BYTES + 1)
        if len(body) > MAX_WEBHOOK_BYTES:
            return _answer(
                errors.gateway_error(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "BODY_TOO_LARGE",
                    "the webhook body is too large",
                    status=413,
                )
            )
        client_id = request.headers.get(CLIENT_HEADER)
        signature = request.headers.get(webhooks.SIGNATURE_HEADER)
        try:
            webhooks.verify(
                self._secrets,
                client_id,
                signature,
                request.headers.get(webhooks.TIMESTAMP_HEADER),
                body,
                self._clock(),
            )
        except webhooks.WebhookRejected as exc:
            log.warning("webhook refused", extra={"fields": {"reason": str(exc.reason)}})
            return _answer(
                errors.gateway_error(
                    grpc.StatusCode.UNAUTHENTICATED,
                    str(exc.reason),
                    "the webhook is not authentic",
                    headers={"WWW-Authenticate": CHALLENGE},
                )
            )
        assert client_id is not None and signature is not None  # verified above
        return await self._deliver(kind, client_id, signature, body)

    async def _deliver(
        self, kind: str, client_id: str, signature: str, body: bytes
    ) -> web.Response:
        async with self._pool.acquire() as conn:
            done = await store.get_delivery(conn, client_id, signature)
        if done is not None:
            return _json(*done)
        reply = await self._call(kind, client_id, body)
        if reply.code in FINAL_CODES:
            async with self._pool.acquire() as conn:
                await store.insert_delivery(
                    conn, client_id, signature, kind, reply.status, reply.body
                )
        return _answer(reply)

    async def _call(self, kind: str, client_id: str, body: bytes) -> Answer:
        """Points' answer, success (code OK) or not."""
        route = self._routes[kind]
        try:
            call = build_request(RouteMatch(route, {}), {}, body, max_body_bytes=MAX_WEBHOOK_BYTES)
        except TranscodeError as exc:
            return errors.gateway_error(
                grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST", str(exc), exc.violations
            )
        token = self._tokens.token(f"webhook:{client_id}", "settlement")
        rpc = self._points.unary_unary(
            route.rpc_path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=route.response_class.FromString,
        )
        try:
            response = await rpc(
                call, timeout=self._timeout_s, metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.aio.AioRpcError as err:
            return errors.from_rpc_error(err)
        return Answer(200, response_json(response), grpc.StatusCode.OK)


def route_of(table: RouteTable, rpc_path: str) -> Route:
    """The REST route of the RPC, for its request message and body rule ("*")."""
    for route in table.routes:
        if route.rpc_path == rpc_path:
            return route
    raise LookupError(rpc_path)
