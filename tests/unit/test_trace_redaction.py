"""Spans are exported without exception messages, status descriptions or request lines."""

from __future__ import annotations

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status, StatusCode

from services.runtime.trace_redaction import REDACTED, redacted

ROW = "Key (member_id, phone)=(m1, 13800138000) already exists"


def test_exception_messages_statuses_and_request_lines_are_dropped() -> None:
    span = ReadableSpan(
        name="INSERT",
        attributes={"http.target": "/v1/members/m1?phone=13800138000", "db.system": "postgresql"},
        events=[
            Event(
                "exception",
                {
                    "exception.type": "UniqueViolationError",
                    "exception.message": ROW,
                    "exception.stacktrace": f"Traceback ...\n{ROW}",
                },
            ),
            Event("retry", {"attempt": 2}),
        ],
        status=Status(StatusCode.ERROR, ROW),
    )
    clean = redacted(span)
    assert clean.attributes == {"http.target": REDACTED, "db.system": "postgresql"}
    assert [dict(e.attributes or {}) for e in clean.events] == [
        {"exception.type": "UniqueViolationError"},
        {"attempt": 2},
    ]
    assert clean.status.status_code == StatusCode.ERROR and not clean.status.description
    assert "13800138000" not in repr(clean.to_json())
