"""Server bootstrap shared by every service: pool, migrations, grpc.aio server, health,
reflection, explicit limits and keepalive, graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import asyncpg
import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.runtime import scrape
from services.runtime.config import ConfigError, Settings, load_settings
from services.runtime.db import create_pool, load_migrations, migrate, watch_database
from services.runtime.identity import TokenVerifier, load_verify_keys
from services.runtime.interceptor import ServiceInterceptor
from services.runtime.logs import configure_logging
from services.runtime.metrics import MetricsEndpoint
from services.runtime.tracing import setup_tracing

log = logging.getLogger("membership.server")


class Component(Protocol):
    """What a service adds to the shared server."""

    @property
    def service_names(self) -> Sequence[str]: ...

    def add_to(self, server: grpc.aio.Server) -> None: ...

    async def close(self) -> None: ...


ComponentFactory = Callable[[asyncpg.Pool, Settings], Awaitable[Component]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    migrations_dir: Path
    build: ComponentFactory
    # gauges queried from the database at scrape time (job lag, outbox age, ...)
    probes: Sequence[scrape.Probe] = ()


@dataclass
class RunningService:
    spec: ServiceSpec
    server: grpc.aio.Server
    port: int
    pool: asyncpg.Pool
    component: Component
    health: health.aio.HealthServicer
    metrics: MetricsEndpoint | None = None
    _stopped: bool = field(default=False)
    # flips health to NOT_SERVING while the database is out of reach (see watch_health)
    watchdog: asyncio.Task[None] | None = field(default=None)

    async def stop(self, grace_s: float) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        await self.health.enter_graceful_shutdown()
        if self.watchdog is not None:
            # lets it close its database connection; `wait` neither raises the task's
            # cancellation (or a failure its done-callback logged) nor swallows our own
            await asyncio.wait([self.watchdog])
        try:
            await self.server.stop(grace_s)
            await self.component.close()
        finally:
            scrape.unwatch(self.spec.name, self.pool)
            await self.pool.close()
            if self.metrics is not None:
                self.metrics.close()


# The health service name a liveness probe asks for: SERVING from start to shutdown, whatever
# the database does. "" and the API's own names go NOT_SERVING while PostgreSQL is out of
# reach (readiness); a liveness probe on them would restart every pod during an outage that
# a restart cannot cure.
LIVENESS_SERVICE = "liveness"


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.max_connection_idle_ms", 300_000),
        # clients keep channels for hours: closing each connection after 5 minutes (calls in
        # flight get 30 s) makes them reconnect, so replicas an autoscaler adds get traffic
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
        # no per-connection stream cap: `maximum_concurrent_rpcs` bounds the work, and a
        # stream cap below it made a burst on one channel see transport refusals
        # (UNAVAILABLE "RST_STREAM error code 7") instead of RESOURCE_EXHAUSTED
        # a second server on a busy port must fail, not silently share the traffic
        ("grpc.so_reuseport", 0),
    ]


async def start_service(
    spec: ServiceSpec, settings: Settings, listen_addr: str | None = None
) -> RunningService:
    """Pool, migrations, the service's component, then the gRPC server; on any failure
    everything already started is closed again."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set")
    pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
    component: Component | None = None
    try:
        async with pool.acquire() as conn:
            await migrate(conn, spec.name, load_migrations(spec.migrations_dir))
        component = await spec.build(pool, settings)
        return await _start_grpc(spec, settings, listen_addr, pool, component)
    except BaseException:
        try:
            if component is not None:
                await component.close()
        finally:
            await pool.close()
        raise


async def _start_grpc(
    spec: ServiceSpec,
    settings: Settings,
    listen_addr: str | None,
    pool: asyncpg.Pool,
    component: Component,
) -> RunningService:
    trusted = load_verify_keys(settings.keys_dir, settings.token_public_keys)
    verifier = TokenVerifier(trusted, settings.token_audience)
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(verifier, spec.name)],
        options=server_options(settings),
        # beyond this many in-flight calls, callers get RESOURCE_EXHAUSTED instead of a queue
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    component.add_to(server)
    names = [*component.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    addr = listen_addr or settings.addr_of(spec.name)
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise OSError(f"could not listen on {addr}") from exc
    await server.start()
    metrics_addr = settings.metrics_addr_of(spec.name)
    metrics = MetricsEndpoint(metrics_addr) if metrics_addr else None
    newest = max((m.version for m in load_migrations(spec.migrations_dir)), default=0)
    scrape.watch(spec.name, pool, newest, spec.probes)
    for name in ["", LIVENESS_SERVICE, *component.service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running = RunningService(spec, server, port, pool, component, health_servicer, metrics)
    watched = ["", *component.service_names]  # not LIVENESS_SERVICE: see there
    running.watchdog = watch_health(settings.database_url, health_servicer, watched)
    return running


def watch_health(
    dsn: str, servicer: health.aio.HealthServicer, names: Sequence[str]
) -> asyncio.Task[None]:
    """NOT_SERVING while the database does not answer, SERVING again once it does: a
    service without its database can only fail requests, so probes and load balancers
    should send them elsewhere meanwhile. The check runs on a connection of its own (see
    `DatabaseCheck`), so a saturated pool never reads as an outage."""

    async def report(reachable: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING
        if not reachable:
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        for name in names:
            await servicer.set(name, status)

    task = asyncio.create_task(watch_database(dsn, report), name="database-watch")
    task.add_done_callback(_watch_ended)
    return task


def _watch_ended(task: asyncio.Task[None]) -> None:
    """A watch that died leaves health frozen at its last status: say so. Only the error's
    type: its message may quote the DSN or the server's words."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error(
            "database watch failed; health no longer follows the database",
            extra={"fields": {"error": type(exc).__name__}},
        )


async def _serve(spec: ServiceSpec) -> None:
    settings = load_settings()
    configure_logging(spec.name, settings.log_level)
    setup_tracing(spec.name)  # before the pool, server and channels it instruments
    running = await start_service(spec, settings)
    metrics_port = running.metrics.port if running.metrics else None
    log.info("serving", extra={"fields": {"port": running.port, "metrics_port": metrics_port}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace_s": settings.shutdown_grace_s}})
    await running.stop(settings.shutdown_grace_s)
    log.info("stopped")


def run(spec: ServiceSpec) -> int:
    """Entry point of `python -m services.<name>`; returns the process exit code."""
    try:
        uvloop.run(_serve(spec))  # asyncpg and grpc.aio cost less CPU per call on uvloop
    except ConfigError as exc:
        configure_logging(spec.name)
        log.error("bad configuration", extra={"fields": {"detail": str(exc)}})
        return 2
    except Exception:
        configure_logging(spec.name)
        log.exception("failed to start")
        return 1
    return 0
