"""`membership status`: one screen with the suite's state.

Per process: gRPC health, and from its Prometheus endpoint the running version, the schema
version (the database's against the newest migration the code has), job lag, outbox backlog
and overdue data-subject requests. The endpoints are what a production scrape reads too, so
the command needs no database access and works wherever the ports are reachable.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from membership_cli.health import SERVING, probe
from services.runtime.db import load_migrations

# longer than a service's own wait for its scrape-time queries (2 s), so that a slow
# database still shows as what it is rather than as an unreachable endpoint
DEFAULT_TIMEOUT_S = 5.0

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
GATEWAY_MIGRATIONS = Path(__file__).resolve().parent.parent / "gateway" / "migrations"

# (metric, its labels) -> the sample's value
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class ServiceStatus:
    addr: str
    health: str
    metrics: str  # the endpoint, or "" when it has none
    version: str = ""
    schema_version: int | None = None
    code_schema_version: int | None = None
    jobs_oldest_due_s: dict[str, float] = field(default_factory=dict)
    jobs_since_success_s: dict[str, float] = field(default_factory=dict)
    outbox_oldest_undelivered_s: float | None = None
    data_requests_overdue: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def newest_migration(service: str) -> int:
    folder = GATEWAY_MIGRATIONS if service == "gateway" else SERVICES_DIR / service / "migrations"
    return max((m.version for m in load_migrations(folder)), default=0)


def scrape(addr: str, timeout_s: float) -> Samples:
    # loopback or cluster-internal endpoints only: the address is the operator's setting
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=timeout_s) as reply:
        return parse(reply.read().decode())


def parse(text: str) -> Samples:
    """Samples of a Prometheus text exposition; raises ValueError when it is not one."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _of(samples: Samples, metric: str, service: str | None, key: str = "") -> dict[str, float]:
    """The service's samples of `metric`, by the value of label `key`; service None: a
    metric of the process itself, without a service label."""
    found = {}
    for (name, labels), value in samples.items():
        named = dict(labels)
        if name == metric and named.get("service") == service:
            found[named.get(key, "")] = value
    return found


def fill(status: ServiceStatus, name: str, samples: Samples) -> None:
    versions = _of(samples, "membership_build_info", name, "version")
    status.version = next(iter(versions), "")
    schema = _of(samples, "membership_schema_version", name).get("")
    status.schema_version = None if schema is None else int(schema)
    status.code_schema_version = newest_migration(name)
    status.jobs_oldest_due_s = _of(samples, "membership_points_job_oldest_due_seconds", name, "job")
    since = _of(samples, "membership_points_job_seconds_since_success", None, "job")
    status.jobs_since_success_s = since if name == "points" else {}
    outbox = _of(samples, "membership_outbox_oldest_undelivered_seconds", name).get("")
    status.outbox_oldest_undelivered_s = outbox
    overdue = _of(samples, "membership_dsr_overdue_requests", name).get("")
    status.data_requests_overdue = None if overdue is None else int(overdue)
    if status.schema_version is None:
        status.problems.append("schema version unknown")
    elif status.schema_version != status.code_schema_version:
        status.problems.append(
            f"schema at {status.schema_version}, code has {status.code_schema_version}"
        )


def service_status(name: str, addr: str, metrics_addr: str, timeout_s: float) -> ServiceStatus:
    status = ServiceStatus(addr, probe(addr, timeout_s), metrics_addr)
    if status.health != SERVING:
        status.problems.append(f"health {status.health}")
    if not metrics_addr:
        status.problems.append("no metrics endpoint")
        return status
    try:
        samples = scrape(metrics_addr, timeout_s)
    # HTTPException: something listens there but does not answer HTTP (BadStatusLine,
    # IncompleteRead); it is no OSError
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
        status.problems.append(f"metrics unreachable ({type(exc).__name__})")
        return status
    fill(status, name, samples)
    return status


def suite_status(
    addrs: Mapping[str, str], metrics: Mapping[str, str], timeout_s: float
) -> dict[str, ServiceStatus]:
    return {n: service_status(n, a, metrics.get(n, ""), timeout_s) for n, a in addrs.items()}


def as_json(statuses: Mapping[str, ServiceStatus]) -> str:
    services = {n: {**asdict(s), "ok": s.ok} for n, s in statuses.items()}
    return json.dumps({"ok": all(s.ok for s in statuses.values()), "services": services})


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"


def as_table(statuses: Mapping[str, ServiceStatus]) -> str:
    lines = [f"{'SERVICE':<9} {'HEALTH':<12} {'VERSION':<9} {'SCHEMA':<7} DETAILS"]
    for name, s in statuses.items():
        schema = f"{s.schema_version}/{s.code_schema_version}" if s.schema_version else "-"
        details = []
        if s.jobs_oldest_due_s:
            details.append(f"job lag {_seconds(max(s.jobs_oldest_due_s.values()))}")
        if s.outbox_oldest_undelivered_s is not None:
            details.append(f"outbox {_seconds(s.outbox_oldest_undelivered_s)}")
        if s.data_requests_overdue is not None:
            details.append(f"overdue requests {s.data_requests_overdue}")
        details += [f"PROBLEM: {p}" for p in s.problems]
        row = f"{name:<9} {s.health:<12} {s.version or '-':<9} {schema:<7} {', '.join(details)}"
        lines.append(row.rstrip())
    return "\n".join(lines)
