"""Spans leave the process without values a caller or the database supplied.

The instrumentations record more than our logs may hold: an exception event carries the
exception's message and stack (asyncpg's messages quote row values, e.g. `Key (...)=(...)`),
a status may carry a description, and HTTP server spans carry the request's path and query.
This exporter wrapper keeps the exception type, the method, the route and the status code,
and drops the rest before anything is sent.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.util.types import Attributes, AttributeValue

# attributes whose values come from the request line: paths hold ids, queries anything
REQUEST_LINE_ATTRIBUTES = frozenset(
    {"http.target", "http.url", "url.full", "url.path", "url.query", "http.user_agent"}
)
REDACTED = "[redacted]"
EXCEPTION_EVENT = "exception"


class RedactingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([redacted(span) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def redacted(span: ReadableSpan) -> ReadableSpan:
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_attributes(span.attributes),
        events=[_event(e) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=Status(span.status.status_code),  # without its description
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _attributes(attributes: Attributes) -> dict[str, AttributeValue]:
    return {
        key: REDACTED if key in REQUEST_LINE_ATTRIBUTES else value
        for key, value in (attributes or {}).items()
    }


def _event(event: Event) -> Event:
    if event.name != EXCEPTION_EVENT:
        return event
    kept = {k: v for k, v in (event.attributes or {}).items() if k == "exception.type"}
    return Event(event.name, kept, event.timestamp)
