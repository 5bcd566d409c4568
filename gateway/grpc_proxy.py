"""The gateway's gRPC pass-through: the services under their own names, forwarded as bytes.

    proxy = GrpcProxy(backends_from(settings), authenticate, signer_minter(signer))
    server, port = await start_proxy(proxy, "127.0.0.1:50050")
    ...
    await proxy.stop(grace_s=5)

Messages are never parsed: the handlers take and return the serialized bytes (no
(de)serializers), so the proxy costs the same for every message and does not need to be
rebuilt when a message changes. Only methods present in the services' descriptors are served;
anything else is UNIMPLEMENTED from gRPC itself.

Per call: the caller's API key (`authorization: Bearer <key>`) is authenticated and held to its
rate limit (the bucket REST uses too: RESOURCE_EXHAUSTED RATE_LIMITED with a RetryInfo when
empty), replaced by a short-lived caller token for the backend (which keeps verifying it and
checking scopes, so the proxy is not the only lock), `x-request-id` is passed on or made, the
caller's remaining deadline (capped) becomes the forwarded call's timeout, cancellation is
passed on, and the backend's status, details and trailing metadata come back unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter

# imported for their side effect too: they put the services' descriptors in the default pool
from gateway.caller_tokens import CallerTokens
from gateway.proxy_failures import RateLimited, abort, failure_of
from gateway.proxy_metadata import (
    Metadata,
    api_key_of,
    forwardable,
    incoming_of,
    relay_initial,
    to_client,
)
from gateway.proxy_routes import SERVICE_OWNERS, PathHandlers, ProxyRoute, routes_of
from services.runtime.config import Settings, load_settings
from services.runtime.errors import unauthenticated
from services.runtime.identity import TokenSigner
from services.runtime.metrics import RPC_SECONDS, RPCS
from services.runtime.server import LIVENESS_SERVICE, server_options

log = logging.getLogger("membership.gateway.grpc")

DEFAULT_LISTEN_ADDR = "127.0.0.1:50050"
# the forwarded call's timeout when the caller set no deadline, and the most it ever gets
DEFAULT_MAX_TIMEOUT_S = 30.0


class Principal(Protocol):
    """Who an API key belongs to; any object with these two attributes will do."""

    @property
    def subject(self) -> str: ...

    @property
    def role(self) -> str: ...


Authenticate = Callable[[str], Awaitable[Principal]]
Mint = Callable[[Principal], str]
# a key's subject -> 0.0 (go ahead, a token was taken) or the seconds until it may call
RateLimit = Callable[[str], float]


def backends_from(settings: Settings) -> dict[str, str]:
    """Every proxied service's full name -> the address of the service that owns it."""
    return {service: settings.addr_of(owner) for service, owner in SERVICE_OWNERS.items()}


def signer_minter(signer: TokenSigner) -> Mint:
    """A `mint` that reuses each principal's token until shortly before it expires: the
    services' verifier remembers the tokens it verified, so a reused token costs a dict
    lookup there instead of an Ed25519 verification, and the proxy saves the signature."""
    tokens = CallerTokens(signer)

    def mint(principal: Principal) -> str:
        return tokens.token(principal.subject, principal.role)

    return mint


@dataclass
class _Running:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    channels: dict[str, grpc.aio.Channel]


class _Observed:
    """The access log and metrics of one proxied method (what `observe_rpc` records, for
    "gateway"). Its metric children are looked up once, not per call: `labels()` takes a
    lock and builds a key every time."""

    def __init__(self, path: str) -> None:
        # the method label is bounded: only methods from the descriptors get here
        self.path = path
        self._seconds = RPC_SECONDS.labels("gateway", path)
        self._counts: dict[str, Counter] = {}

    def finish(self, code: str, role: str, started: float) -> None:
        elapsed_s = time.perf_counter() - started
        counter = self._counts.get(code)
        if counter is None:
            counter = self._counts[code] = RPCS.labels("gateway", self.path, code)
        counter.inc()
        self._seconds.observe(elapsed_s)
        if not log.isEnabledFor(logging.INFO):
            return  # the fields are not even built
        log.info(
            "rpc",
            extra={
                "fields": {
                    "method": self.path,
                    "code": code,
                    "role": role,
                    "duration_ms": round(elapsed_s * 1000, 2),
                }
            },
        )


class GrpcProxy:
    """Forwards every method of the named services to its backend, authenticated.

    `backends`: service full name (`membership.points.v1.PointsService`) -> backend target.
    `authenticate`: the API key -> its principal; any exception means the key is not valid.
    `mint`: principal -> caller token for the backend, called on every call, so it should
    reuse tokens (`signer_minter` does).
    `rate_limit`: the per-key limit, shared with REST (`KeyLimiter.wait_s`); None: none.
    """

    def __init__(
        self,
        backends: Mapping[str, str],
        authenticate: Authenticate,
        mint: Mint,
        *,
        settings: Settings | None = None,
        max_timeout_s: float = DEFAULT_MAX_TIMEOUT_S,
        rate_limit: RateLimit | None = None,
    ) -> None:
        if max_timeout_s <= 0:
            raise ValueError("max_timeout_s must be positive")
        self._routes = routes_of(backends)
        self._authenticate = authenticate
        self._mint = mint
        self._settings = settings or load_settings({})
        self._max_timeout_s = max_timeout_s
        self._rate_limit = rate_limit
        self._running: _Running | None = None

    @property
    def service_names(self) -> list[str]:
        return sorted({route.service for route in self._routes})

    async def start(self, listen_addr: str) -> tuple[grpc.aio.Server, int]:
        """See `start_proxy`."""
        if self._running is not None:
            raise RuntimeError("this proxy is already serving")
        server = _new_server(self._settings)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        channels = self._add_to(server)
        health_name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
        reflection.enable_server_reflection(
            [*self.service_names, health_name, reflection.SERVICE_NAME], server
        )
        self._running = _Running(server, health_servicer, channels)
        try:
            port = _listen(server, listen_addr)
            await server.start()
        except BaseException:
            await self.stop(0)
            raise
        # as healthy as the proxy can tell: each backend reports its own health
        for name in ["", LIVENESS_SERVICE, *self.service_names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        return server, port

    async def stop(self, grace_s: float) -> None:
        """Stops serving (in-flight calls get `grace_s`), then closes the backend channels."""
        running, self._running = self._running, None
        if running is None:
            return
        await running.health.enter_graceful_shutdown()
        try:
            await running.server.stop(grace_s)
        finally:
            for channel in running.channels.values():
                await channel.close()

    def _add_to(self, server: grpc.aio.Server) -> dict[str, grpc.aio.Channel]:
        """Registers the proxied methods on `server`, each calling its backend over one
        channel per backend target (privacy's four services share one)."""
        channels = {t: self._open_channel(t) for t in sorted({r.target for r in self._routes})}
        handlers = {r.path: self._handler(r, channels[r.target]) for r in self._routes}
        server.add_generic_rpc_handlers((PathHandlers(handlers),))
        return channels

    def _open_channel(self, target: str) -> grpc.aio.Channel:
        limit = self._settings.max_message_bytes
        # no retry policy here: the caller's own retries apply end to end, not multiplied
        return grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                # backends are reached directly, never through an HTTP proxy from the env
                ("grpc.enable_http_proxy", 0),
            ],
        )

    def _handler(self, route: ProxyRoute, channel: grpc.aio.Channel) -> grpc.RpcMethodHandler:
        # no (de)serializers on either side: bytes in, bytes out
        observed = _Observed(route.path)
        if route.server_streaming:
            stream_call = channel.unary_stream(route.path, _registered_method=True)
            return grpc.unary_stream_rpc_method_handler(
                functools.partial(self._forward_stream, route, observed, stream_call)
            )
        unary_call = channel.unary_unary(route.path, _registered_method=True)
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(self._forward_unary, route, observed, unary_call)
        )

    async def _forward_unary(
        self,
        route: ProxyRoute,
        observed: _Observed,
        multicallable: grpc.aio.UnaryUnaryMultiCallable,
        request: bytes,
        context: grpc.aio.ServicerContext,
    ) -> bytes:
        started = time.perf_counter()
        incoming, request_id = incoming_of(context)
        code, role = "OK", ""
        try:
            principal = await self._principal_of(incoming)
            role = principal.role
            metadata = self._forwarded(principal, request_id, incoming)
            # the timeout is taken after authentication, which spent some of the caller's time
            call = multicallable(request, timeout=self._timeout_s(context), metadata=metadata)
            try:
                response: bytes = await call
            except asyncio.CancelledError:
                # the caller went away or its deadline passed: so does the backend call
                call.cancel()
                raise
            # a unary call's metadata is at hand once its response is: these do not wait
            initial = await call.initial_metadata()
            if initial:
                await relay_initial(context, initial)
            context.set_trailing_metadata(to_client(await call.trailing_metadata(), request_id))
            return response
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            failure = failure_of(route, exc, request_id)
            code = failure.code.name
            await abort(context, failure)
        finally:
            observed.finish(code, role, started)

    async def _forward_stream(
        self,
        route: ProxyRoute,
        observed: _Observed,
        multicallable: grpc.aio.UnaryStreamMultiCallable,
        request: bytes,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        incoming, request_id = incoming_of(context)
        code, role = "OK", ""
        try:
            principal = await self._principal_of(incoming)
            role = principal.role
            metadata = self._forwarded(principal, request_id, incoming)
            call = multicallable(request, timeout=self._timeout_s(context), metadata=metadata)
            try:
                await relay_initial(context, await call.initial_metadata())
                async for message in call:
                    yield message
            except (asyncio.CancelledError, GeneratorExit):
                call.cancel()
                raise
            context.set_trailing_metadata(to_client(await call.trailing_metadata(), request_id))
        except (asyncio.CancelledError, GeneratorExit):
            code = "CANCELLED"
            raise
        except Exception as exc:
            failure = failure_of(route, exc, request_id)
            code = failure.code.name
            await abort(context, failure)
        finally:
            observed.finish(code, role, started)

    def _forwarded(self, principal: Principal, request_id: str, incoming: Metadata) -> Metadata:
        """The forwarded call's metadata: the caller token in place of the API key."""
        # a principal the token cannot carry (unknown role) is a gateway bug: INTERNAL
        token = self._mint(principal)
        return (
            ("authorization", f"Bearer {token}"),
            ("x-request-id", request_id),
            *forwardable(incoming),
        )

    async def _principal_of(self, incoming: Metadata) -> Principal:
        """The caller, authenticated and within its key's rate (RateLimited if not)."""
        api_key = api_key_of(incoming)
        try:
            principal = await self._authenticate(api_key)
        except Exception as exc:
            # the reason stays in the log: the caller only learns the key is not valid
            log.info(
                "authentication failed",
                extra={"fields": {"error_type": type(exc).__name__}},
            )
            raise unauthenticated("API_KEY_INVALID", "API key is not valid") from exc
        wait_s = self._rate_limit(principal.subject) if self._rate_limit else 0.0
        if wait_s > 0:
            raise RateLimited(wait_s)
        return principal

    def _timeout_s(self, context: grpc.aio.ServicerContext) -> float:
        remaining: float | None = context.time_remaining()
        if remaining is None:
            return self._max_timeout_s
        # a caller's very long deadline is capped too: bounded everything (docs/design.md §8)
        return min(max(remaining, 0.0), self._max_timeout_s)


async def start_proxy(
    proxy: GrpcProxy, listen_addr: str = DEFAULT_LISTEN_ADDR
) -> tuple[grpc.aio.Server, int]:
    """Serves `proxy` on `listen_addr` (port 0: any free port) with health checking and
    reflection; returns the server and its port. Stop it with `proxy.stop(grace_s)`."""
    return await proxy.start(listen_addr)


def _new_server(settings: Settings) -> grpc.aio.Server:
    return grpc.aio.server(
        options=server_options(settings),
        # beyond this many in-flight calls, callers get RESOURCE_EXHAUSTED instead of a queue
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )


def _listen(server: grpc.aio.Server, listen_addr: str) -> int:
    try:
        port: int = server.add_insecure_port(listen_addr)
    except RuntimeError as exc:
        raise OSError(f"could not listen on {listen_addr}") from exc
    return port
