"""OpenTelemetry tracing across gateway -> services -> PostgreSQL, off unless configured.

Configured through the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER=otlp; OTEL_TRACES_EXPORTER=none
turns it off. Unset, nothing is set up: no SDK, no instrumentation, and the API's no-op
tracer costs next to nothing. The official instrumentations do the work: grpc.aio servers
and channels (W3C traceparent in gRPC metadata), aiohttp servers (the gateway's REST side)
and asyncpg (one span per statement, SQL text with placeholders). Spans pass through
services/runtime/trace_redaction.py before export: exception messages, status descriptions
and request lines (paths, queries) are dropped, since they can quote values.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("membership.tracing")

# the SDK allows one tracer provider per process
_installed: list[str] = []


def tracing_configured(env: Mapping[str, str]) -> bool:
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint or exporter)


def setup_tracing(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Sets up the SDK with an OTLP exporter when configured; True if it did. Call before
    any gRPC server, channel or database pool is made."""
    env = os.environ if env is None else env
    if not tracing_configured(env):
        return False
    # imported only when tracing is on: the SDK and exporter are not loaded otherwise
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    install(service, OTLPSpanExporter(), batch=True)
    log.info("tracing on", extra={"fields": {"exporter": "otlp"}})
    return True


def install(service: str, exporter: SpanExporter, batch: bool) -> None:
    """The tracer provider exporting to `exporter` (through the redaction), and the
    instrumentations; once per process (tests pass an in-memory exporter, unbatched)."""
    if _installed:
        return
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from services.runtime.trace_redaction import RedactingExporter

    safe = RedactingExporter(exporter)
    processor = BatchSpanProcessor(safe) if batch else SimpleSpanProcessor(safe)
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": f"membership-{service}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    # the instrumentation packages ship no type hints
    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    _instrument_aiohttp_server(install=True)
    _installed.append(service)


def uninstall() -> None:
    """Removes the instrumentations again (tests); the provider stays, as the SDK wants."""
    if not _installed:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )

    GrpcAioInstrumentorServer().uninstrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().uninstrument()  # type: ignore[no-untyped-call]
    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    _instrument_aiohttp_server(install=False)
    _installed.clear()


def _instrument_aiohttp_server(install: bool) -> None:
    """The gateway's REST side: aiohttp applications made from now on are traced. The
    instrumentor subclasses web.Application, which aiohttp warns about; that warning is the
    instrumentation's business, not a fault of ours (warnings are errors in the tests)."""
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Inheritance class .* from web.Application", DeprecationWarning
        )
        if install:
            AioHttpServerInstrumentor().instrument()
        else:
            AioHttpServerInstrumentor().uninstrument()


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the active span in hex, for log lines; None without one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
