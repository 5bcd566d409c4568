"""The privacy service's gauges, queried at scrape time: data-subject requests by state,
how many open ones are past their legal deadline, and the age of the outbox's backlog.

Counts only: the state is one of the schema's CHECK values, no request or member id."""

from __future__ import annotations

from services.privacy.store import metrics as metrics_store
from services.runtime.db import Conn
from services.runtime.scrape import Probe, Samples, outbox_probe


async def _by_state(conn: Conn) -> Samples:
    return [((c.state,), float(c.requests)) for c in await metrics_store.requests_by_state(conn)]


async def _overdue(conn: Conn) -> Samples:
    return [((), float(await metrics_store.overdue_requests(conn)))]


PROBES = (
    Probe(
        "membership_dsr_requests",
        "Data-subject requests, by state",
        ("state",),
        _by_state,
    ),
    Probe(
        "membership_dsr_overdue_requests",
        "Open data-subject requests past their deadline",
        (),
        _overdue,
    ),
    outbox_probe("privacy"),
)
