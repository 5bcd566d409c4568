"""SQL of the background jobs: the job lock, due lots, the bulk writes of a batch, and how
long due work has waited (the job lag metric).

A batch is written with one statement per table (arrays through `unnest`), so a batch of
500 lots costs a handful of round trips rather than a few thousand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from services.points.domain.jobs import BalanceDeltas, DueLot, LotKey, LotMove
from services.points.domain.ledger import LotState
from services.runtime.db import Conn

# the first key of the two-key advisory locks of jobs; the second is the job's own
JOB_LOCK_NAMESPACE = 0x6A6F6273  # "jobs"


def job_lock_key(job: str) -> int:
    return int.from_bytes(hashlib.sha256(job.encode()).digest()[:4], "big") & 0x7FFFFFFF


async def try_job_lock(conn: Conn, job: str) -> bool:
    """Held until the transaction ends: a replica that does not get it skips the job."""
    got = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock($1, $2)", JOB_LOCK_NAMESPACE, job_lock_key(job)
    )
    return bool(got)


_LOT_COLUMNS = (
    "member_id, lot_id, txn_id, points, remaining, earned_at, available_at, expires_at,"
    " rule_version"
)
# which lots each job takes ($1 is the job's `now`); only these constants are put into SQL text
_DUE = {
    "maturation": "state = 'PENDING' AND available_at <= $1",
    # spent or fully held lots too: they close (EXPIRED, nothing moves) like any other
    "expiry": "state = 'AVAILABLE' AND expires_at <= $1",
}
_DUE_ORDER = {"maturation": "available_at", "expiry": "expires_at"}


async def due_lot_keys(conn: Conn, due: str, now: datetime, limit: int) -> list[LotKey]:
    """Candidates only: they are read again, locked, once their members' balances are."""
    rows = await conn.fetch(
        f"SELECT member_id, lot_id FROM points.lots WHERE {_DUE[due]}"
        f" ORDER BY {_DUE_ORDER[due]}, member_id, lot_id LIMIT $2",
        now,
        limit,
    )
    return [LotKey(r["member_id"], int(r["lot_id"])) for r in rows]


async def lock_due_lots(
    conn: Conn, due: str, now: datetime, keys: Sequence[LotKey]
) -> list[DueLot]:
    """The candidates that are still due now that nothing else can change them."""
    rows = await conn.fetch(
        f"SELECT {_LOT_COLUMNS} FROM points.lots"
        " WHERE (member_id, lot_id) IN"
        " (SELECT * FROM unnest($2::text[], $3::bigint[]))"
        f" AND {_DUE[due]} ORDER BY member_id, lot_id FOR UPDATE",
        now,
        [k.member_id for k in keys],
        [k.lot_id for k in keys],
    )
    return [
        DueLot(
            r["member_id"],
            int(r["lot_id"]),
            int(r["txn_id"]),
            int(r["points"]),
            int(r["remaining"]),
            r["earned_at"],
            r["available_at"],
            r["expires_at"],
            int(r["rule_version"]),
        )
        for r in rows
    ]


async def record_moves(conn: Conn, moves: list[LotMove], balance_deltas: BalanceDeltas) -> None:
    if not moves:
        return
    await _insert_transactions(conn, moves)
    await _insert_transfers(conn, moves)
    await _update_lots(conn, moves)
    await _update_balances(conn, balance_deltas)


async def _insert_transactions(conn: Conn, moves: list[LotMove]) -> None:
    await conn.execute(
        "INSERT INTO points.transactions (member_id, txn_id, kind, idempotency_key,"
        " request_hash, rule_version, points, result, explanation)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[],"
        " $5::bytea[], $6::bigint[], $7::bigint[], $8::jsonb[], $9::jsonb[])",
        [m.lot.member_id for m in moves],
        [m.txn_id for m in moves],
        [m.kind for m in moves],
        [m.idempotency_key for m in moves],
        [hashlib.sha256(m.idempotency_key.encode()).digest() for m in moves],
        [m.lot.rule_version for m in moves],
        [m.signed_points for m in moves],
        [json.dumps(m.result) for m in moves],
        [json.dumps(m.explanation, ensure_ascii=False) for m in moves],
    )


async def _insert_transfers(conn: Conn, moves: list[LotMove]) -> None:
    await conn.execute(
        "INSERT INTO points.transfers (member_id, transfer_id, txn_id, from_account,"
        " to_account, amount, lot_id, rule_version)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],"
        " $5::text[], $6::bigint[], $7::bigint[], $8::bigint[])",
        [m.lot.member_id for m in moves],
        [m.transfer_id for m in moves],
        [m.txn_id for m in moves],
        [m.from_account for m in moves],
        [m.to_account for m in moves],
        [m.lot.remaining for m in moves],
        [m.lot.lot_id for m in moves],
        [m.lot.rule_version for m in moves],
    )


async def _update_lots(conn: Conn, moves: list[LotMove]) -> None:
    await conn.execute(
        "UPDATE points.lots l SET state = u.state, remaining = u.remaining"
        " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])"
        " AS u(member_id, lot_id, state, remaining)"
        " WHERE l.member_id = u.member_id AND l.lot_id = u.lot_id",
        [m.lot.member_id for m in moves],
        [m.lot.lot_id for m in moves],
        [m.new_state for m in moves],
        [m.new_remaining for m in moves],
    )


async def _update_balances(conn: Conn, deltas: BalanceDeltas) -> None:
    members = sorted(deltas)
    await conn.execute(
        "UPDATE points.balances b SET available = b.available + d.available,"
        " pending = b.pending + d.pending, updated_at = now()"
        " FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS d(member_id, available, pending)"
        " WHERE b.member_id = d.member_id",
        members,
        [deltas[m].available for m in members],
        [deltas[m].pending for m in members],
    )


async def mark_lots(conn: Conn, keys: Sequence[LotKey], state: LotState) -> None:
    """State only, for lots with nothing left to move (no transfer may be of 0 points)."""
    if not keys:
        return
    await conn.execute(
        "UPDATE points.lots l SET state = $3 FROM unnest($1::text[], $2::bigint[])"
        " AS k(member_id, lot_id) WHERE l.member_id = k.member_id AND l.lot_id = k.lot_id",
        [k.member_id for k in keys],
        [k.lot_id for k in keys],
        state,
    )


# which due items each job works through, and the column that says since when they are due;
# only these constants go into SQL text
_OLDEST_DUE = {
    "maturation": ("points.lots", "available_at", "state = 'PENDING'"),
    "expiry": ("points.lots", "expires_at", "state = 'AVAILABLE'"),
    "hold_expiry": ("points.holds", "expires_at", "state = 'HELD'"),
}


async def oldest_due(conn: Conn) -> dict[str, float]:
    """Per job: how long the oldest item it should have handled has been due (0: none)."""
    found = {}
    for job, (table, column, where) in _OLDEST_DUE.items():
        age = await conn.fetchval(
            f"SELECT COALESCE(EXTRACT(EPOCH FROM now() - min({column})), 0)::float8"
            f" FROM {table} WHERE {where} AND {column} <= now()"
        )
        found[job] = max(float(age or 0.0), 0.0)
    return found
