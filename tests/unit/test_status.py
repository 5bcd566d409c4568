"""`membership status` over sample /metrics texts and endpoints that do not speak HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from membership_cli.main import build_parser
from membership_cli.status import ServiceStatus, fill, parse, service_status

POINTS_METRICS = """\
# TYPE membership_build_info gauge
membership_build_info{service="points",version="1.2.3"} 1.0
# TYPE membership_schema_version gauge
membership_schema_version{service="points"} 3.0
# TYPE membership_points_job_oldest_due_seconds gauge
membership_points_job_oldest_due_seconds{job="maturation",service="points"} 40.0
# TYPE membership_points_job_seconds_since_success gauge
membership_points_job_seconds_since_success{job="maturation"} 12.0
membership_points_job_seconds_since_success{job="expiry"} 7.5
"""


def test_job_lag_since_the_last_success_is_read_from_the_points_process() -> None:
    status = ServiceStatus("127.0.0.1:1", "SERVING", "127.0.0.1:2")
    fill(status, "points", parse(POINTS_METRICS))
    assert status.version == "1.2.3"
    assert status.jobs_oldest_due_s == {"maturation": 40.0}
    assert status.jobs_since_success_s == {"maturation": 12.0, "expiry": 7.5}


@pytest.fixture
def not_http() -> Iterator[str]:
    """A listener that answers every connection with a line that is no HTTP status."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)

    def answer() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(4096)
            conn.sendall(b"hello\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    thread.join(5)


def test_a_metrics_endpoint_that_is_not_http_is_a_problem_not_a_crash(not_http: str) -> None:
    status = service_status("points", "127.0.0.1:1", not_http, 2.0)
    assert "metrics unreachable (BadStatusLine)" in status.problems
    assert not status.ok


def test_status_waits_longer_than_the_services_scrape_time_queries() -> None:
    assert build_parser().parse_args(["status"]).timeout_s == 5.0
