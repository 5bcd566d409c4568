"""The gateway process: its key store, the REST/JSON server and the gRPC pass-through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import uvloop
from aiohttp import web
from membership.accounts.v1 import accounts_pb2
from membership.points.v1 import points_pb2, promotions_pb2
from membership.privacy.v1 import audit_pb2, consent_pb2, data_rights_pb2, field_crypto_pb2

from gateway import console, console_cookies, webhooks
from gateway.caller_tokens import CallerTokens
from gateway.grpc_proxy import (
    DEFAULT_LISTEN_ADDR,
    GrpcProxy,
    backends_from,
    signer_minter,
    start_proxy,
)
from gateway.http_rules import RouteTable, routes_of
from gateway.keys import InvalidApiKey, KeyVerifier
from gateway.openapi import openapi_document
from gateway.openapi_webhooks import with_webhooks
from gateway.rate_limit import KeyLimiter, TokenBuckets
from gateway.rest import Authenticator, Principal, RestGateway, RestSettings, application
from gateway.webhook_endpoint import WebhookEndpoint
from services.runtime import scrape
from services.runtime.clients import open_channel
from services.runtime.config import ConfigError, Settings, load_settings
from services.runtime.db import create_pool, load_migrations, migrate
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from services.runtime.logs import configure_logging
from services.runtime.metrics import MetricsEndpoint
from services.runtime.tracing import setup_tracing

log = logging.getLogger("membership.gateway")

MIGRATIONS = Path(__file__).parent / "migrations"
# which backend serves which service
SERVICES = {
    "membership.accounts.v1.AccountsService": ("accounts", accounts_pb2),
    "membership.points.v1.PointsService": ("points", points_pb2),
    "membership.points.v1.PromotionsService": ("points", promotions_pb2),
    "membership.privacy.v1.FieldCryptoService": ("privacy", field_crypto_pb2),
    "membership.privacy.v1.ConsentService": ("privacy", consent_pb2),
    "membership.privacy.v1.DataRightsService": ("privacy", data_rights_pb2),
    "membership.privacy.v1.AuditService": ("privacy", audit_pb2),
}


@dataclass(frozen=True)
class GatewaySettings:
    http_addr: str
    grpc_addr: str
    rate_per_s: float
    burst: int
    request_timeout_s: float
    max_body_bytes: int
    # empty: no Prometheus endpoint
    metrics_addr: str = ""
    # settlement client id -> its webhook secrets (two while rotating)
    webhook_secrets: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)
    # the console's session cookie is marked Secure (TLS ends in front of the gateway)
    secure_cookies: bool = True


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g}")
    return value


def load_gateway_settings(env: Mapping[str, str]) -> GatewaySettings:
    return GatewaySettings(
        http_addr=env.get("MEMBERSHIP_GATEWAY_HTTP_ADDR", "127.0.0.1:8080"),
        grpc_addr=env.get("MEMBERSHIP_GATEWAY_GRPC_ADDR", DEFAULT_LISTEN_ADDR),
        rate_per_s=_number(env, "MEMBERSHIP_GATEWAY_RATE_PER_S", 50, 0.01, 100_000),
        burst=int(_number(env, "MEMBERSHIP_GATEWAY_BURST", 100, 1, 1_000_000)),
        request_timeout_s=_number(env, "MEMBERSHIP_GATEWAY_TIMEOUT_S", 10, 0.05, 120),
        max_body_bytes=int(
            _number(env, "MEMBERSHIP_GATEWAY_MAX_BODY_BYTES", 1 << 20, 1024, 64 << 20)
        ),
        webhook_secrets=webhooks.load_secrets(env),
        metrics_addr=env.get("MEMBERSHIP_GATEWAY_METRICS_ADDR", ""),
        secure_cookies=console_cookies.secure_cookies_setting(env),
    )


def route_table() -> RouteTable:
    descriptors = [
        module.DESCRIPTOR.services_by_name[name.rsplit(".", 1)[1]]
        for name, (_, module) in SERVICES.items()
    ]
    return RouteTable(routes_of(descriptors))


@dataclass
class RunningGateway:
    http_port: int
    grpc_port: int
    pool: asyncpg.Pool
    runner: web.AppRunner
    proxy: GrpcProxy
    channels: dict[str, grpc.aio.Channel]
    _stopped: bool = field(default=False)

    async def stop(self, grace_s: float = 1.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            await self.proxy.stop(grace_s)
            await self.runner.cleanup()
            for channel in self.channels.values():
                await channel.close()
        finally:
            scrape.unwatch("gateway", self.pool)
            await self.pool.close()


def _authenticator(verifier: KeyVerifier) -> Authenticator:
    async def authenticate(api_key: str) -> Principal:
        try:
            record = await verifier.verify(api_key)
        except InvalidApiKey as exc:
            raise PermissionError(str(exc.reason)) from None
        return Principal(f"key:{record.key_id}", record.role, record.key_id)

    return authenticate


async def start_gateway(settings: Settings, gw: GatewaySettings) -> RunningGateway:
    pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, "gateway", load_migrations(MIGRATIONS))
        running = await _serve(settings, gw, pool)
    except BaseException:
        await pool.close()
        raise
    scrape.watch("gateway", pool, len(load_migrations(MIGRATIONS)))
    return running


async def _serve(settings: Settings, gw: GatewaySettings, pool: asyncpg.Pool) -> RunningGateway:
    table = route_table()
    channels = {
        name: open_channel(settings.addr_of(backend), settings.max_message_bytes)
        for name, (backend, _) in SERVICES.items()
    }
    signer = TokenSigner(
        load_or_create_signing_key(settings.keys_dir), settings.token_audience, "gateway"
    )
    tokens = CallerTokens(signer)
    hooks = WebhookEndpoint(
        pool,
        gw.webhook_secrets,
        table,
        channels["membership.points.v1.PointsService"],
        tokens,
        gw.request_timeout_s,
    )
    # one limiter for both doors: a key's calls over REST and gRPC draw on one bucket
    limiter = KeyLimiter(TokenBuckets(gw.rate_per_s, gw.burst, 100_000), time.monotonic)
    rest = RestGateway(
        table,
        channels,
        _authenticator(KeyVerifier(pool)),
        tokens,
        limiter,
        RestSettings(gw.request_timeout_s, gw.max_body_bytes),
    )
    document = json.dumps(
        with_webhooks(openapi_document(table.routes, "wallet-membership", "v1"), table)
    ).encode()

    def extra(app: web.Application) -> None:
        async def openapi(_: web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")

        app.router.add_get("/openapi.json", openapi)
        hooks.add_to(app)
        console.add_to(app, rest, pool, secure_cookies=gw.secure_cookies)

    runner = web.AppRunner(application(rest, extra), access_log=None)
    await runner.setup()
    host, _, port = gw.http_addr.rpartition(":")
    site = web.TCPSite(runner, host, int(port), reuse_port=False)
    proxy = GrpcProxy(
        backends_from(settings),
        rest.authenticate,
        signer_minter(signer),
        settings=settings,
        rate_limit=limiter.wait_s,
    )
    try:
        await site.start()
        _, grpc_port = await start_proxy(proxy, gw.grpc_addr)
    except BaseException:
        await proxy.stop(0)
        await runner.cleanup()
        for channel in channels.values():
            await channel.close()
        raise
    bound = _bound_port(runner, int(port))
    return RunningGateway(bound, grpc_port, pool, runner, proxy, channels)


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    """The port the site listens on (the one the OS chose when asked for 0)."""
    for server in runner.sites:
        sockets = getattr(getattr(server, "_server", None), "sockets", None) or []
        for sock in sockets:
            return int(sock.getsockname()[1])
    return asked


async def _main(settings: Settings) -> None:
    gw = load_gateway_settings(os.environ)
    running = await start_gateway(settings, gw)
    metrics = MetricsEndpoint(gw.metrics_addr) if gw.metrics_addr else None
    log.info("gateway serving", extra={"fields": {"http_port": running.http_port}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    if metrics is not None:
        metrics.close()


def main() -> int:
    """Entry point of `python -m gateway`; returns the process exit code."""
    try:
        settings = load_settings(os.environ)
        configure_logging("gateway", settings.log_level)
        setup_tracing("gateway")  # before the pool, servers and channels it instruments
        with contextlib.suppress(KeyboardInterrupt):
            uvloop.run(_main(settings))  # as the services: grpc.aio costs less CPU per call
    except ConfigError as exc:
        configure_logging("gateway")
        log.error("bad configuration", extra={"fields": {"detail": str(exc)}})
        return 2
    return 0
