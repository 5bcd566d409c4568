"""Prometheus metrics of every service: RPC counts and latencies, served over HTTP.

Labels are bounded sets (service, registered method, status code); never anything a caller
chose freely, and never personal information.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger("membership.metrics")

RPCS = Counter("membership_rpc_total", "RPCs handled, by outcome", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "membership_rpc_duration_seconds",
    "Time to handle an RPC",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def observe_rpc(service: str, method: str, code: str, duration_s: float) -> None:
    RPCS.labels(service, method, code).inc()
    RPC_SECONDS.labels(service, method).observe(duration_s)


class MetricsEndpoint:
    """`GET /metrics` on `addr` (host:port); a busy port is logged, not fatal: serving
    members matters more than being watched."""

    def __init__(self, addr: str) -> None:
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        host, _, port = addr.rpartition(":")
        try:
            self._server, self._thread = start_http_server(int(port), addr=host)
        except (OSError, ValueError):
            log.exception("metrics endpoint not started", extra={"fields": {"addr": addr}})

    @property
    def port(self) -> int | None:
        return None if self._server is None else int(self._server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
