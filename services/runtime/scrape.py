"""Gauges read at scrape time: connection pool usage and small database queries.

prometheus_client scrapes on its own HTTP thread, while pools and connections belong to the
service's event loop: the queries are handed to that loop and waited for with a short
timeout, and their answers are cached for a few seconds, so a burst of scrapes (or a slow
database) costs at most one bounded query per probe per TTL. A probe that fails or times out
is left out of that scrape (and logged); serving members matters more than being watched.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import Gauge
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.runtime.db import Conn

log = logging.getLogger("membership.metrics")

PROBE_TTL_S = 5.0
PROBE_STATEMENT_TIMEOUT_MS = 500
PROBE_WAIT_S = 2.0

# labels (without "service") -> value
Samples = list[tuple[tuple[str, ...], float]]


@dataclass(frozen=True)
class Probe:
    """One gauge family a query answers; its label values must come from bounded sets."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    query: Callable[[Conn], Awaitable[Samples]]


@dataclass
class ProbeSet:
    pool: asyncpg.Pool
    loop: asyncio.AbstractEventLoop
    probes: Sequence[Probe]
    ttl_s: float = PROBE_TTL_S
    _cached: dict[str, Samples] = field(default_factory=dict)
    _at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def samples(self) -> dict[str, Samples]:
        with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                self._cached = self._refresh()
                self._at = time.monotonic()
            return self._cached

    def _refresh(self) -> dict[str, Samples]:
        try:
            if asyncio.get_running_loop() is self.loop:
                return self._cached  # a scrape from the loop itself would wait on itself
        except RuntimeError:
            pass
        work = self._query_all()
        try:
            # raises once the loop closed (a service stopped without unwatching): that
            # leaves the probes out too, rather than failing the whole scrape
            future = asyncio.run_coroutine_threadsafe(work, self.loop)
        except RuntimeError as exc:
            work.close()  # never scheduled: closed here, or it warns that it never ran
            log.warning("metrics probes failed", extra={"fields": {"error": type(exc).__name__}})
            return {}
        try:
            return future.result(PROBE_WAIT_S)
        except Exception as exc:  # TimeoutError, or the database's own
            future.cancel()
            log.warning("metrics probes failed", extra={"fields": {"error": type(exc).__name__}})
            return {}

    async def _query_all(self) -> dict[str, Samples]:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            # bounded: a scrape must never hold a connection for long
            await conn.execute(f"SET LOCAL statement_timeout = {PROBE_STATEMENT_TIMEOUT_MS}")
            answers: dict[str, Samples] = {}
            for probe in self.probes:
                samples = await _query_one(conn, probe)
                if samples is not None:
                    answers[probe.name] = samples
            return answers


async def _query_one(conn: Conn, probe: Probe) -> Samples | None:
    """The probe's samples, or None when the database refused it (its statement timeout,
    most often). In a savepoint of its own: an error aborts the enclosing transaction, and
    would otherwise leave every later probe of the scrape out too."""
    try:
        async with conn.transaction():
            return await probe.query(conn)
    except asyncpg.PostgresError as exc:
        fields = {"probe": probe.name, "error": type(exc).__name__}
        log.warning("metrics probe failed", extra={"fields": fields})
        return None


class _ScrapeCollector(Collector):
    """One collector for the process: services started side by side in one process (tests)
    each register under their own name, and their samples share one family per metric."""

    def __init__(self) -> None:
        self._pools: dict[str, asyncpg.Pool] = {}
        self._probes: dict[str, ProbeSet] = {}
        self._lock = threading.Lock()

    def add(self, service: str, pool: asyncpg.Pool, probes: ProbeSet | None) -> None:
        with self._lock:
            self._pools[service] = pool
            if probes is not None:
                self._probes[service] = probes

    def remove(self, service: str, pool: asyncpg.Pool) -> None:
        with self._lock:
            if self._pools.get(service) is pool:
                del self._pools[service]
                self._probes.pop(service, None)

    def describe(self) -> Iterable[Metric]:
        return []  # families vary with what is registered; skips the duplicate check

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            pools, probe_sets = dict(self._pools), dict(self._probes)
        yield _pool_family(pools)
        families: dict[str, GaugeMetricFamily] = {}
        for service, probe_set in sorted(probe_sets.items()):
            answers = probe_set.samples()
            for probe in probe_set.probes:
                family = families.get(probe.name)
                if family is None:
                    family = families[probe.name] = GaugeMetricFamily(
                        probe.name, probe.documentation, labels=["service", *probe.labels]
                    )
                for labels, value in answers.get(probe.name, []):
                    family.add_metric([service, *labels], value)
        yield from families.values()


def _pool_family(pools: dict[str, asyncpg.Pool]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "membership_db_pool_connections",
        "Database connections of the service's pool, by state",
        labels=["service", "state"],
    )
    for service, pool in sorted(pools.items()):
        size, idle = pool.get_size(), pool.get_idle_size()
        family.add_metric([service, "size"], size)
        family.add_metric([service, "idle"], idle)
        family.add_metric([service, "in_use"], size - idle)
        family.add_metric([service, "max"], pool.get_max_size())
    return family


COLLECTOR = _ScrapeCollector()
REGISTRY.register(COLLECTOR)


def watch(service: str, pool: asyncpg.Pool, code_schema: int, probes: Sequence[Probe] = ()) -> None:
    """Reports `pool`'s usage, the schema versions (the database's and `code_schema`, the
    newest migration this code has), the build, and runs `probes` at scrape time, as
    `service`; call from the loop that owns the pool."""
    BUILD_INFO.labels(service, package_version()).set(1)
    SCHEMA_CODE.labels(service).set(code_schema)
    every = (schema_probe(service), *probes)
    COLLECTOR.add(service, pool, ProbeSet(pool, asyncio.get_running_loop(), every))


def unwatch(service: str, pool: asyncpg.Pool) -> None:
    COLLECTOR.remove(service, pool)


def package_version() -> str:
    try:
        return importlib.metadata.version("wallet-membership")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO = Gauge(
    "membership_build_info", "The running code's version (always 1)", ["service", "version"]
)
SCHEMA_CODE = Gauge(
    "membership_schema_code_version", "The newest migration the running code has", ["service"]
)


def schema_probe(schema: str) -> Probe:
    """The newest migration applied to `schema` in the database."""
    table = f'"{schema}".schema_migrations'  # a constant of the caller, never input

    async def query(conn: Conn) -> Samples:
        version = await conn.fetchval(f"SELECT COALESCE(max(version), 0) FROM {table}")
        return [((), float(version or 0))]

    return Probe(
        "membership_schema_version", "The newest migration applied in the database", (), query
    )


def outbox_probe(schema: str) -> Probe:
    """Seconds since the oldest undelivered event of `schema`'s outbox was written (0: none).

    The oldest is the first by event_id (ids are handed out in the order of writing): one
    row read from the outbox's partial index on event_id WHERE published_at IS NULL, where
    min(created_at) would read every undelivered row, and a backlog is when this matters."""
    table = f"{schema}.outbox"  # a constant of the caller, never input

    async def query(conn: Conn) -> Samples:
        age = await conn.fetchval(
            "SELECT COALESCE(EXTRACT(EPOCH FROM now() - ("
            f"SELECT created_at FROM {table} WHERE published_at IS NULL"
            " ORDER BY event_id LIMIT 1)), 0)::float8"
        )
        return [((), float(age or 0.0))]

    return Probe(
        "membership_outbox_oldest_undelivered_seconds",
        "Age of the oldest event of the outbox not yet delivered (0: none)",
        (),
        query,
    )
