"""SQL of Reconcile: one set-based query per invariant, bounded output, full counts.

Every check is a `SELECT member_id, detail` of what is wrong (`_bounded` wraps it so that at
most `limit` rows come back, with the count of all of them). Parameters: $1 the limit, $2 the
member (NULL for the whole ledger), then the check's own. Details carry ids and numbers only,
never personal information.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from services.points.domain.ledger import Account, TransactionKind
from services.points.domain.reconcile import Counts, Found
from services.runtime.db import Conn

Check = Callable[[Conn, str | None, int], Awaitable[tuple[list[Found], int]]]

# whole-ledger checks scan every table, which takes longer than a request may (10 s on the
# server, 30 s in asyncpg); the server-side limit is SET LOCAL, so it ends with the
# reconciliation's transaction
STATEMENT_TIMEOUT_S = 900


async def allow_long_statements(conn: Conn) -> None:
    await conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_S * 1000}")


def _of(alias: str, param: str = "$2") -> str:
    """The member filter of one table alias."""
    return f"({param}::text IS NULL OR {alias}.member_id = {param})"


async def _bounded(
    conn: Conn, found_sql: str, member_id: str | None, limit: int, *args: Any
) -> tuple[list[Found], int]:
    row = await conn.fetchrow(
        f"WITH found AS ({found_sql})"
        " SELECT (SELECT count(*) FROM found) AS total,"
        " (SELECT COALESCE(json_agg(json_build_array(member_id, detail)), '[]')"
        "  FROM (SELECT * FROM found ORDER BY member_id, detail LIMIT $1) f) AS rows",
        max(limit, 0),
        member_id,
        *args,
        timeout=STATEMENT_TIMEOUT_S,
    )
    if row is None:
        return [], 0
    return [Found(m, d) for m, d in json.loads(row["rows"])], int(row["total"])


async def invalid_transfers(
    conn: Conn, member_id: str | None, limit: int
) -> tuple[list[Found], int]:
    # the table's CHECKs forbid these; checked anyway, as a proof rather than a belief
    sql = (
        "SELECT tr.member_id, format('transfer %s of %s points from %s to %s',"
        " tr.transfer_id, tr.amount, tr.from_account, tr.to_account) AS detail"
        f" FROM points.transfers tr WHERE {_of('tr')}"
        " AND (tr.amount <= 0 OR tr.from_account = tr.to_account)"
    )
    return await _bounded(conn, sql, member_id, limit)


async def orphans(
    conn: Conn,
    member_id: str | None,
    limit: int,
    meaning: Mapping[TransactionKind, Sequence[Account]],
) -> tuple[list[Found], int]:
    """Transfers without their transaction; transactions whose points are not what their
    transfers moved into the accounts `meaning` names for their kind."""
    sql = (
        "SELECT tr.member_id, format('transfer %s names transaction %s, which does not exist',"
        " tr.transfer_id, tr.txn_id) AS detail FROM points.transfers tr"
        f" WHERE {_of('tr')} AND NOT EXISTS (SELECT 1 FROM points.transactions t"
        "  WHERE t.member_id = tr.member_id AND t.txn_id = tr.txn_id)"
        " UNION ALL"
        " SELECT t.member_id, format('%s transaction %s has %s points but its transfers"
        " moved %s', t.kind, t.txn_id, t.points, COALESCE(moved.net, 0))"
        " FROM points.transactions t"
        " JOIN unnest($3::text[], $4::text[]) AS m(kind, accounts) ON m.kind = t.kind"
        " LEFT JOIN LATERAL (SELECT sum("
        "   CASE WHEN tr.to_account = ANY(string_to_array(m.accounts, ','))"
        "   THEN tr.amount ELSE 0 END"
        "   - CASE WHEN tr.from_account = ANY(string_to_array(m.accounts, ','))"
        "   THEN tr.amount ELSE 0 END) AS net"
        "  FROM points.transfers tr"
        "  WHERE tr.member_id = t.member_id AND tr.txn_id = t.txn_id) moved ON true"
        f" WHERE {_of('t')} AND t.points <> COALESCE(moved.net, 0)"
    )
    kinds = sorted(meaning)
    accounts = [",".join(meaning[k]) for k in kinds]
    return await _bounded(conn, sql, member_id, limit, kinds, accounts)


async def unknown_rule_versions(
    conn: Conn, member_id: str | None, limit: int
) -> tuple[list[Found], int]:
    known = "EXISTS (SELECT 1 FROM points.program_rules r WHERE r.version = x.rule_version)"
    sql = " UNION ALL ".join(
        f"SELECT x.member_id, format('{what} %s cites rule version %s, never loaded',"
        f" x.{key}, x.rule_version) AS detail FROM points.{table} x"
        f" WHERE {_of('x')} AND NOT {known}"
        for what, table, key in (
            ("transaction", "transactions", "txn_id"),
            ("transfer", "transfers", "transfer_id"),
            ("lot", "lots", "lot_id"),
        )
    )
    return await _bounded(conn, sql, member_id, limit)


# net inflow of each member account, per member, over every transfer
_MOVED = (
    "SELECT tr.member_id,"
    + ",".join(
        f" sum(CASE WHEN tr.to_account = 'member:{a}' THEN tr.amount ELSE 0 END)"
        f" - sum(CASE WHEN tr.from_account = 'member:{a}' THEN tr.amount ELSE 0 END) AS {a}"
        for a in ("available", "pending", "held")
    )
    + f" FROM points.transfers tr WHERE {_of('tr')} GROUP BY tr.member_id"
)


async def balance_mismatches(
    conn: Conn, member_id: str | None, limit: int
) -> tuple[list[Found], int]:
    # a member with transfers but no balance row has balances of 0, and the reverse
    sql = (
        f"SELECT member_id, format('balance (available %s, pending %s, held %s) but"
        " transfers (available %s, pending %s, held %s)', COALESCE(b.available, 0),"
        " COALESCE(b.pending, 0), COALESCE(b.held, 0), COALESCE(m.available, 0),"
        " COALESCE(m.pending, 0), COALESCE(m.held, 0)) AS detail"
        f" FROM (SELECT * FROM points.balances b WHERE {_of('b')}) b"
        f" FULL JOIN ({_MOVED}) m USING (member_id)"
        " WHERE COALESCE(b.available, 0) <> COALESCE(m.available, 0)"
        " OR COALESCE(b.pending, 0) <> COALESCE(m.pending, 0)"
        " OR COALESCE(b.held, 0) <> COALESCE(m.held, 0)"
    )
    return await _bounded(conn, sql, member_id, limit)


async def lots_mismatches(conn: Conn, member_id: str | None, limit: int) -> tuple[list[Found], int]:
    """pending == PENDING lots' remaining; available + debt == AVAILABLE lots' remaining
    (services/points/debt.py); held == the points of open holds (004_holds.sql; without
    that table nothing can hold points, so held must be 0)."""
    holds_exist = await conn.fetchval("SELECT to_regclass('points.holds') IS NOT NULL")
    held_check = (
        " OR COALESCE(b.held, 0) <> COALESCE((SELECT sum(h.points) FROM points.holds h"
        "  WHERE h.member_id = COALESCE(b.member_id, l.member_id) AND h.state = 'HELD'), 0)"
        if holds_exist
        else " OR COALESCE(b.held, 0) <> 0"
    )
    sql = (
        "SELECT member_id, format('pending %s, available %s (debt %s), held %s but lots"
        " pending %s, available %s', COALESCE(b.pending, 0), COALESCE(b.available, 0),"
        " GREATEST(0, -COALESCE(b.available, 0)), COALESCE(b.held, 0),"
        " COALESCE(l.pending, 0), COALESCE(l.available, 0)) AS detail"
        f" FROM (SELECT * FROM points.balances b WHERE {_of('b')}) b"
        " FULL JOIN (SELECT l.member_id,"
        "  sum(l.remaining) FILTER (WHERE l.state = 'PENDING') AS pending,"
        "  sum(l.remaining) FILTER (WHERE l.state = 'AVAILABLE') AS available"
        f"  FROM points.lots l WHERE {_of('l')} GROUP BY l.member_id) l USING (member_id)"
        " WHERE COALESCE(b.pending, 0) <> COALESCE(l.pending, 0)"
        " OR COALESCE(b.available, 0) + GREATEST(0, -COALESCE(b.available, 0))"
        "  <> COALESCE(l.available, 0)" + held_check
    )
    return await _bounded(conn, sql, member_id, limit)


async def overdrawn_lots(conn: Conn, member_id: str | None, limit: int) -> tuple[list[Found], int]:
    sql = (
        "SELECT l.member_id, format('lot %s (%s) has %s of %s points left', l.lot_id,"
        " l.state, l.remaining, l.points) AS detail FROM points.lots l"
        f" WHERE {_of('l')} AND (l.points <= 0 OR l.remaining < 0 OR l.remaining > l.points"
        " OR (l.state IN ('CANCELLED', 'EXPIRED') AND l.remaining > 0))"
    )
    return await _bounded(conn, sql, member_id, limit)


async def below_floor(conn: Conn, member_id: str | None, limit: int) -> tuple[list[Found], int]:
    sql = (
        "SELECT b.member_id, format('available %s below its floor %s', b.available,"
        " b.available_floor) AS detail FROM points.balances b"
        f" WHERE {_of('b')} AND (b.available < b.available_floor OR b.available_floor > 0)"
    )
    return await _bounded(conn, sql, member_id, limit)


async def duplicate_keys(conn: Conn, member_id: str | None, limit: int) -> tuple[list[Found], int]:
    # the unique constraint forbids it; checked anyway (a dropped index would not say so)
    sql = (
        "SELECT t.member_id, format('key %s recorded by %s transactions (%s)',"
        " t.idempotency_key, count(*), string_agg(t.txn_id::text, ', ' ORDER BY t.txn_id))"
        f" AS detail FROM points.transactions t WHERE {_of('t')}"
        " GROUP BY t.member_id, t.idempotency_key HAVING count(*) > 1"
    )
    return await _bounded(conn, sql, member_id, limit)


async def books_not_closing(
    conn: Conn, member_id: str | None, limit: int, accounts: Sequence[str]
) -> tuple[list[Found], int]:
    """Per member: the nets of the known accounts sum to 0 (services/points/reconcile.py)."""
    sql = (
        "SELECT member_id, format('known accounts net %s, not 0; points moved via %s',"
        " sum(net), string_agg(DISTINCT account, ', ') FILTER (WHERE NOT known)) AS detail"
        " FROM (SELECT tr.member_id, a.account, a.net, a.account = ANY($3::text[]) AS known"
        "  FROM points.transfers tr, LATERAL (VALUES (tr.to_account, tr.amount),"
        "   (tr.from_account, -tr.amount)) AS a(account, net)"
        f"  WHERE {_of('tr')}) moves"
        " GROUP BY member_id HAVING sum(net) FILTER (WHERE known) <> 0"
    )
    return await _bounded(conn, sql, member_id, limit, list(accounts))


async def counts(conn: Conn, member_id: str | None) -> Counts:
    row = await conn.fetchrow(
        "SELECT"
        f" (SELECT count(*) FROM points.transactions x WHERE {_of('x', '$1')}) AS transactions,"
        f" (SELECT count(*) FROM points.transfers x WHERE {_of('x', '$1')}) AS transfers,"
        f" (SELECT count(*) FROM points.lots x WHERE {_of('x', '$1')}) AS lots,"
        " (SELECT count(*) FROM (SELECT member_id FROM points.balances x"
        f"  WHERE {_of('x', '$1')} UNION SELECT member_id FROM points.transactions x"
        f"  WHERE {_of('x', '$1')}) m) AS members",
        member_id,
        timeout=STATEMENT_TIMEOUT_S,
    )
    if row is None:
        return Counts(0, 0, 0, 0)
    return Counts(
        int(row["members"]), int(row["transactions"]), int(row["transfers"]), int(row["lots"])
    )
