"""Tracing: one call through the gateway is one trace with the gateway's, the service's
and PostgreSQL's spans; and log lines carry the trace and span ids while a span is active."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.grpc_proxy import GrpcProxy, backends_from, signer_minter
from gateway.server import start_gateway
from services.runtime import tracing
from services.runtime.logs import JsonFormatter
from tests.service.test_gateway_grpc_proxy import FakeKeys, key, serving
from tests.service.test_gateway_rest import SETTINGS, call, new_key
from tests.service.test_points_settlement import known_member, payment
from tests.support.suite import Suite, running_suite

SETTLE = "/membership.points.v1.PointsService/SettlePayment"
EXPORTER = InMemorySpanExporter()


@pytest.fixture
def traced() -> Iterator[InMemorySpanExporter]:
    """Tracing on, as OTEL_* settings would turn it on, exporting to memory."""
    tracing.install("tests", EXPORTER, batch=False)
    EXPORTER.clear()
    try:
        yield EXPORTER
    finally:
        tracing.uninstall()


@pytest.fixture
async def traced_suite(
    traced: InMemorySpanExporter, database: str, keys_dir: Path
) -> AsyncIterator[Suite]:
    # started after the instrumentation, so its servers, channels and pools are traced
    async with running_suite(database, keys_dir) as suite:
        yield suite


def _trace_of(spans: list[ReadableSpan], name: str, kind: SpanKind) -> list[ReadableSpan]:
    roots = [s for s in spans if s.name == name and s.kind == kind]
    assert roots, sorted({(s.name, s.kind.name) for s in spans})
    trace_id = roots[-1].context.trace_id
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


async def test_a_call_through_the_gateway_is_one_trace(
    traced_suite: Suite, traced: InMemorySpanExporter
) -> None:
    suite = traced_suite
    member_id = await known_member(suite)
    keys = FakeKeys()
    proxy = GrpcProxy(
        backends_from(suite.settings),
        keys.authenticate,
        signer_minter(suite.signer),
        settings=suite.settings,
    )
    async with serving(proxy, keys) as gateway:
        traced.clear()
        await gateway.points.SettlePayment(payment(member_id, "tr-1"), metadata=key("settle"))
    spans = _trace_of(list(traced.get_finished_spans()), SETTLE, SpanKind.SERVER)
    servers = [s for s in spans if s.name == SETTLE and s.kind == SpanKind.SERVER]
    clients = [s for s in spans if s.name == SETTLE and s.kind == SpanKind.CLIENT]
    database = [s for s in spans if s.attributes and s.attributes.get("db.system") == "postgresql"]
    assert len(servers) == 2, "the gateway's and the points service's"
    assert len(clients) == 2, "the test's call and the gateway's forwarded call"
    assert database, sorted(s.name for s in spans)
    # the service's span is a child of the gateway's forwarded call
    gateway_client = next(c for c in clients if c.parent is not None)
    assert any(
        s.parent is not None and s.parent.span_id == gateway_client.context.span_id for s in servers
    )


async def test_a_rest_call_is_one_trace_from_the_gateway_to_postgresql(
    traced_suite: Suite, traced: InMemorySpanExporter
) -> None:
    suite = traced_suite
    member_id = await known_member(suite)
    gateway = await start_gateway(suite.settings, SETTINGS)
    try:
        settler = await new_key(suite, "settlement")
        traced.clear()
        body = json_format.MessageToDict(payment(member_id, "tr-rest"))
        del body["member"]  # in the path
        status, _, _ = await call(
            gateway, "POST", f"/v1/members/{member_id}/payments:settle", settler, body
        )
    finally:
        await gateway.stop()
    assert status == 200
    spans = _trace_of(list(traced.get_finished_spans()), SETTLE, SpanKind.CLIENT)
    kinds = {(s.kind, s.name == SETTLE) for s in spans}
    # the REST request (aiohttp server), the forwarded call, the points service, its queries
    assert (SpanKind.SERVER, False) in kinds and (SpanKind.SERVER, True) in kinds
    assert any(s.attributes and s.attributes.get("db.system") == "postgresql" for s in spans)
    rest_span = next(s for s in spans if s.kind == SpanKind.SERVER and s.name != SETTLE)
    assert rest_span.parent is None, "the REST request is the trace's root"
    # the exported spans hold no value from the request line (ids, queries)
    exported = [str(v) for s in spans for v in (s.attributes or {}).values()]
    assert not [v for v in exported if member_id in v]


def test_log_lines_carry_trace_and_span_ids(traced: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("tests")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(formatter.format(record))
    with trace.get_tracer("tests").start_as_current_span("work") as span:
        entry = json.loads(formatter.format(record))
    context = span.get_span_context()
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"


def test_tracing_is_off_unless_configured() -> None:
    assert not tracing.tracing_configured({})
    assert not tracing.tracing_configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert tracing.tracing_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"})
    assert tracing.tracing_configured({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.setup_tracing("tests", {}) is False
