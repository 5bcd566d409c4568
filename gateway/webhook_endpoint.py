"""`POST /v1/webhooks/payments` and `/v1/webhooks/refunds`: settlement webhooks, signed with
HMAC-SHA256 over timestamp and body. Nothing reaches a service before the signature, the
timestamp window and the client are checked. A replay of an accepted delivery answers what
the first one got; the payment (refund) id is the points service's idempotency key anyway."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import asyncpg
import grpc
from aiohttp import web

from gateway import errors, store, webhooks
from gateway.caller_tokens import CallerTokens
from gateway.http_rules import Route, RouteMatch, RouteTable
from gateway.transcode import TranscodeError, build_request, response_json

log = logging.getLogger("membership.gateway.webhooks")

CLIENT_HEADER = "X-Client-Id"
KINDS = {
    "payments": "/membership.points.v1.PointsService/SettlePayment",
    "refunds": "/membership.points.v1.PointsService/RefundPayment",
}
MAX_WEBHOOK_BYTES = 64 * 1024
# answers worth repeating: the service decided (not a passing outage, which a retry fixes)
FINAL_STATUSES = frozenset({200, 400, 404, 409})


def _json(status: int, payload: bytes) -> web.Response:
    return web.Response(status=status, body=payload, content_type="application/json")


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
        self._routes = {kind: _route(table, rpc) for kind, rpc in KINDS.items()}
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
            return _json(413, self._refusal("BODY_TOO_LARGE", "the webhook body is too large"))
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
            status, payload = errors.gateway_error(
                grpc.StatusCode.UNAUTHENTICATED, str(exc.reason), "the webhook is not authentic"
            )
            return _json(status, payload)
        assert client_id is not None and signature is not None  # verified above
        return await self._deliver(kind, client_id, signature, body)

    def _refusal(self, reason: str, text: str) -> bytes:
        return errors.gateway_error(grpc.StatusCode.INVALID_ARGUMENT, reason, text)[1]

    async def _deliver(
        self, kind: str, client_id: str, signature: str, body: bytes
    ) -> web.Response:
        async with self._pool.acquire() as conn:
            done = await store.get_delivery(conn, client_id, signature)
        if done is not None:
            return _json(*done)
        status, payload = await self._call(kind, client_id, body)
        if status in FINAL_STATUSES:
            async with self._pool.acquire() as conn:
                await store.insert_delivery(conn, client_id, signature, kind, status, payload)
        return _json(status, payload)

    async def _call(self, kind: str, client_id: str, body: bytes) -> tuple[int, bytes]:
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
        return 200, response_json(response)


def _route(table: RouteTable, rpc_path: str) -> Route:
    """The REST route of the RPC, for its request message and body rule ("*")."""
    for route in table.routes:
        if route.rpc_path == rpc_path:
            return route
    raise LookupError(rpc_path)
