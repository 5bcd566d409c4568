"""End to end: `membership status` after `membership run` shows a healthy suite, read from
the processes' gRPC health and Prometheus endpoints (the gateway's included)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_suite_processes import (
    SERVICES,
    Launcher,
    _cli,
    _free_port,
    _stop,
    _stop_leftover_postgres,
    _wait_all_serving,
    suite_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def env_with_metrics() -> dict[str, str]:
    env: dict[str, str] = suite_env.__wrapped__()  # type: ignore[attr-defined]
    # free ports of their own: gRPC port + 1000 (the default) may be taken here
    for name in SERVICES:
        env[f"MEMBERSHIP_{name.upper()}_METRICS_ADDR"] = f"127.0.0.1:{_free_port()}"
    return env


@pytest.fixture
def status_launcher(tmp_path: Path, env_with_metrics: dict[str, str]) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, env_with_metrics)
    try:
        yield launcher
    finally:
        launcher.cleanup()
        _stop_leftover_postgres(tmp_path / "data")


def test_status_shows_a_healthy_suite(status_launcher: Launcher, tmp_path: Path) -> None:
    suite = status_launcher.start(tmp_path / "data", "status")
    _wait_all_serving(suite)
    result = subprocess.run(
        _cli("status", "--json"), env=suite.env, capture_output=True, check=False, timeout=60
    )
    report = json.loads(result.stdout)
    assert result.returncode == 0, (report, result.stderr.decode())
    assert report["ok"] is True
    assert set(report["services"]) == set(SERVICES)
    for name, service in report["services"].items():
        assert service["health"] == "SERVING", name
        assert service["version"], name
        assert service["schema_version"] == service["code_schema_version"] > 0, name
    assert report["services"]["privacy"]["data_requests_overdue"] == 0
    assert set(report["services"]["points"]["jobs_oldest_due_s"]) >= {"maturation", "expiry"}
    assert suite.summary["services"]["gateway"]["metrics"]
    table = subprocess.run(
        _cli("status"), env=suite.env, capture_output=True, check=False, timeout=60
    )
    assert table.returncode == 0 and b"gateway" in table.stdout
    assert _stop(suite) == 0


def test_status_fails_when_the_suite_is_down(env_with_metrics: dict[str, str]) -> None:
    result = subprocess.run(
        _cli("status", "--json", "--timeout-s", "0.5"),
        env=env_with_metrics,
        capture_output=True,
        check=False,
        timeout=60,
    )
    report = json.loads(result.stdout)
    assert result.returncode == 1
    assert report["ok"] is False
    assert all(s["health"] != "SERVING" for s in report["services"].values())
