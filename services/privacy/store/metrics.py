"""SQL of the privacy service's gauges (metrics.py): counts only, no request or member id."""

from __future__ import annotations

from typing import NamedTuple

from services.runtime.db import Conn


class StateCount(NamedTuple):
    state: str  # one of the schema's CHECK values
    requests: int


async def requests_by_state(conn: Conn) -> list[StateCount]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM privacy.data_requests GROUP BY state")
    return [StateCount(str(r["state"]), int(r["n"])) for r in rows]


async def overdue_requests(conn: Conn) -> int:
    # the (closed, due_at, id) index answers it without a scan of closed requests
    n = await conn.fetchval(
        "SELECT count(*) FROM privacy.data_requests WHERE closed_at IS NULL AND due_at < now()"
    )
    return int(n or 0)
