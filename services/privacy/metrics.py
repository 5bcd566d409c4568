"""The privacy service's gauges, queried at scrape time: data-subject requests by state,
how many open ones are past their legal deadline, and the age of the outbox's backlog.

Counts only: the state is one of the schema's CHECK values, no request or member id."""

from __future__ import annotations

from services.runtime.db import Conn
from services.runtime.scrape import Probe, Samples, outbox_probe


async def _by_state(conn: Conn) -> Samples:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM privacy.data_requests GROUP BY state")
    return [((str(r["state"]),), float(r["n"])) for r in rows]


async def _overdue(conn: Conn) -> Samples:
    # the (closed, due_at, id) index answers it without a scan of closed requests
    n = await conn.fetchval(
        "SELECT count(*) FROM privacy.data_requests WHERE closed_at IS NULL AND due_at < now()"
    )
    return [((), float(n or 0))]


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
