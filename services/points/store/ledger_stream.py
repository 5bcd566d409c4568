"""SQL of StreamMemberLedger: a member's transactions, lots and holds rendered by PostgreSQL
as the text the stream carries (domain/ledger_stream.py says which), many rows' text in one
fetched value. Run inside the caller's repeatable-read transaction (a cursor needs one).

The text equals what privacy's bundle wrote from ExportMemberLedger's messages
(services/privacy/proto_export_bundle.py): the proto3 JSON mapping (64-bit integers as
strings, Timestamp.ToJsonString's 0, 3 or 6 fraction digits) and its CSV rules; the service
test compares the two byte for byte.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import NamedTuple

from services.points.domain.ledger_stream import (
    CSV_SPECIAL,
    FORMULA_STARTS,
    MEMBER_ACCOUNTS,
    ROWS_PER_FETCH,
)
from services.points.domain.transactions import REFERENCE_TYPES
from services.runtime.db import Conn


class Rendered(NamedTuple):
    """One fetch: the JSON lines and the CSV rows of `rows` transactions (or lines only)."""

    json: bytes  # UTF-8, as PostgreSQL renders it (the server's encoding is UTF8)
    csv: bytes
    rows: int


def _literal(text: str) -> str:
    """A constant of the code as an SQL literal (never a value from a caller); control
    characters escaped (E'\t'), so that the statement stays printable."""
    escaped = text.replace("\\", "\\\\").replace("'", "''")
    escaped = escaped.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
    return ("E'" if escaped != text.replace("'", "''") else "'") + escaped + "'"


def _rfc3339(column: str) -> str:
    """Timestamp.ToJsonString's text of a timestamptz: UTC, with 6, 3 or 0 fraction digits
    (as the Timestamp's nanos print), by one to_char whose format the fraction picks; the
    usual case (microseconds) first, so that it reads the fraction once."""
    clock = 'YYYY-MM-DD"T"HH24:MI:SS'
    micros = f"date_part('microseconds', {column})::int"  # the seconds' field, in µs
    return (
        f"to_char({column} AT TIME ZONE 'UTC', CASE WHEN {micros} % 1000 <> 0"
        f" THEN '{clock}.US\"Z\"' WHEN {micros} % 1000000 <> 0 THEN '{clock}.MS\"Z\"'"
        f" ELSE '{clock}\"Z\"' END)"
    )


def _cell(column: str) -> str:
    """A CSV text cell: an apostrophe before a formula's start, quoted as Python's csv
    module quotes (QUOTE_MINIMAL: a comma, quote, CR or LF in it). strpos, not a regular
    expression: the regex engine widens each UTF-8 text to wide characters first, which
    made the cell cost about twice as much."""
    starts = ", ".join(_literal(c) for c in FORMULA_STARTS)
    shown = f"CASE WHEN left({column}, 1) IN ({starts}) THEN '''' || {column} ELSE {column} END"
    special = " OR ".join(f"strpos({column}, {_literal(c)}) > 0" for c in CSV_SPECIAL)
    return (
        f"CASE WHEN {special} THEN '\"' || replace({shown}, '\"', '\"\"') || '\"' ELSE {shown} END"
    )


def _json_text(column: str) -> str:
    """A JSON string of any text (escaped as json.dumps does, non-ASCII as it is)."""
    return f"to_json({column})::text"


def _json_word(column: str) -> str:
    """A JSON string of one of the code's own words (a kind, an account, a reference type:
    no quote, backslash or control character), without to_json's cost per call."""
    return f"'\"' || {column} || '\"'"


# the reference of a transaction: what its idempotency key's prefix wraps
# (domain/transactions.reference_of); a key of a kind added later is shown whole
_REFERENCE_TYPE = (
    "CASE split_part(t.idempotency_key, ':', 1) "
    + " ".join(f"WHEN {_literal(p)} THEN {_literal(k)}" for p, k in REFERENCE_TYPES.items())
    + " END"
)


def _delta(account: str) -> str:
    return (
        f"sum(CASE WHEN to_account = {_literal(account)} THEN amount"
        f" WHEN from_account = {_literal(account)} THEN -amount ELSE 0 END)"
    )


# The member's transactions in fetches of ROWS_PER_FETCH, newest first: each fetch starts at
# a bound (its newest transaction's position, from BOUNDS) and reads its rows from the
# `(member_id, created_at, txn_id)` index, so that renderers take any fetches with no
# numbering of the whole ledger each; the fetch's transfers are one index range (txn ids of
# one member's fetch are close), grouped once. Each field is computed once (OFFSET 0 keeps
# the planner from copying these expressions into both renderings).
BOUNDS = f"""
SELECT created_at, txn_id FROM (
  SELECT created_at, txn_id, row_number() OVER (ORDER BY created_at DESC, txn_id DESC) AS n
  FROM points.transactions WHERE member_id = $1
) w WHERE n % {ROWS_PER_FETCH} = 1 ORDER BY n
"""
_TRANSACTIONS = f"""
WITH t AS MATERIALIZED (
  SELECT txn_id, kind, points, rule_version, created_at, idempotency_key, explanation
  FROM points.transactions WHERE member_id = $1 AND (created_at, txn_id) <= ($3, $4::bigint)
  ORDER BY created_at DESC, txn_id DESC LIMIT {ROWS_PER_FETCH}
), f AS (
  SELECT txn_id,
    string_agg('{{"fromAccount":' || {_json_word("from_account")}
      || ',"toAccount":' || {_json_word("to_account")} || ',"amount":"' || amount
      || '","lotId":"' || coalesce(lot_id, 0) || '","ruleVersion":"' || rule_version || '"}}',
      ',' ORDER BY transfer_id) AS transfers,
    {_delta(MEMBER_ACCOUNTS[0])} AS available,
    {_delta(MEMBER_ACCOUNTS[1])} AS pending,
    {_delta(MEMBER_ACCOUNTS[2])} AS held
  FROM points.transfers WHERE member_id = $1
    AND txn_id BETWEEN (SELECT min(txn_id) FROM t) AND (SELECT max(txn_id) FROM t)
  GROUP BY txn_id
)
SELECT t.txn_id, t.created_at, t.kind, t.points, t.rule_version, r.at, r.sentence, r.ref_type,
  CASE WHEN r.known THEN substr(t.idempotency_key, strpos(t.idempotency_key, ':') + 1)
    ELSE t.idempotency_key END AS ref_value,
  coalesce(f.transfers, '') AS transfers, coalesce(f.available, 0) AS available,
  coalesce(f.pending, 0) AS pending, coalesce(f.held, 0) AS held
FROM t
CROSS JOIN LATERAL (
  SELECT {_rfc3339("t.created_at")} AS at,
    coalesce(t.explanation->>'sentence', '') AS sentence,
    strpos(t.idempotency_key, ':') > 0 AND {_REFERENCE_TYPE} IS NOT NULL AS known,
    coalesce(CASE WHEN strpos(t.idempotency_key, ':') > 0 THEN {_REFERENCE_TYPE} END,
      'idempotency_key') AS ref_type
) r
LEFT JOIN f ON f.txn_id = t.txn_id
OFFSET 0
"""

# $2: the JSON-quoted start of the transactions' names, `"members/{id}/transactions/`;
# concat() rather than ||: one call per line instead of one per piece (measured 10 % less)
_TRANSACTION_JSON = (
    f"""concat('{{"transaction":{{"name":', $2::text, txn_id, '","kind":', {_json_word("kind")},"""
    """ ',"points":"', points, '","ruleVersion":"', rule_version, '","createTime":"', at,"""
    f""" '","reference":{{"type":', {_json_word("ref_type")}, ',"value":',"""
    f""" {_json_text("ref_value")}, '}},"transfers":[', transfers, ']}},"sentence":',"""
    f""" {_json_text("sentence")}, E'}}\\n')"""
)
# kind and the reference type are the code's own words (no comma, quote or formula start)
_TRANSACTION_CSV = (
    "concat_ws(',', txn_id, kind, at, points, available, pending, held, ref_type, "
    + _cell("ref_value")
    + ", rule_version, "
    + _cell("sentence")
    + ") || E'\\r\\n'"
)
TRANSACTIONS = f"""
SELECT convert_to(string_agg({_TRANSACTION_JSON}, '' ORDER BY created_at DESC, txn_id DESC),
    'UTF8'),
  convert_to(string_agg({_TRANSACTION_CSV}, '' ORDER BY created_at DESC, txn_id DESC), 'UTF8'),
  count(*)
FROM ({_TRANSACTIONS}) x
"""

_LOT_JSON = (
    """'{"lotId":"' || lot_id || '","transactionId":"' || txn_id || '","state":'"""
    """ || to_json(state)::text || ',"points":"' || points || '","remaining":"' || remaining"""
    f""" || '","earnTime":"' || {_rfc3339("earned_at")}"""
    f""" || '","availableTime":"' || {_rfc3339("available_at")}"""
    f""" || '","expireTime":"' || {_rfc3339("expires_at")}"""
    """ || '","ruleVersion":"' || rule_version || E'"}\\n'"""
)
LOTS = f"""
SELECT convert_to(string_agg(line, '' ORDER BY n), 'UTF8'), count(*) FROM (
  SELECT {_LOT_JSON} AS line, row_number() OVER (ORDER BY lot_id) AS n
  FROM points.lots WHERE member_id = $1
) x GROUP BY (n - 1) / {ROWS_PER_FETCH} ORDER BY (n - 1) / {ROWS_PER_FETCH}
"""

_HOLD_JSON = (
    """'{"holdId":' || to_json(hold_id)::text || ',"state":' || to_json(state)::text"""
    """ || ',"points":"' || points || '","capturedPoints":"' || captured_points"""
    f""" || '","expireTime":"' || {_rfc3339("expires_at")}"""
    """ || '","ruleVersion":"' || rule_version || '","transactionId":"' || hold_txn_id"""
    f""" || '","createTime":"' || {_rfc3339("created_at")} || '"'"""
    f""" || CASE WHEN closed_at IS NULL THEN '' ELSE ',"closeTime":"' || {_rfc3339("closed_at")}"""
    """ || '"' END || ',"pointsClawedBack":"' || clawed_back_points || E'"}\\n'"""
)
HOLDS = f"""
SELECT convert_to(string_agg(line, '' ORDER BY n), 'UTF8'), count(*) FROM (
  SELECT {_HOLD_JSON} AS line, row_number() OVER (ORDER BY hold_txn_id, hold_id) AS n
  FROM points.holds WHERE member_id = $1
) x GROUP BY (n - 1) / {ROWS_PER_FETCH} ORDER BY (n - 1) / {ROWS_PER_FETCH}
"""

# a cursor's rows fetched ahead: each is up to ~1 MB of text
PREFETCH = 2


# the sorts of a stream (its transactions, numbered; their transfers, grouped) in memory:
# spilled to disk they took a third longer; local to the stream's transaction
WORK_MEM = "64MB"
_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")


async def prepare_session(conn: Conn) -> None:
    await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")


async def export_snapshot(conn: Conn) -> str:
    """The transaction's snapshot, for other connections to read the same (the exporting
    transaction must stay open while they import it)."""
    snapshot: str = await conn.fetchval("SELECT pg_export_snapshot()")
    return snapshot


async def import_snapshot(conn: Conn, snapshot: str) -> None:
    """Reads what the exporting transaction reads (first statement of a repeatable-read
    transaction). SET TRANSACTION takes no parameter: the id is checked, then inlined."""
    if not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError("not a snapshot id")
    await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    await prepare_session(conn)


async def transaction_count(conn: Conn, member_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM points.transactions WHERE member_id = $1", member_id
    )
    return count


class Bound(NamedTuple):
    """Where a fetch starts: its newest transaction's position."""

    created_at: datetime
    txn_id: int


async def fetch_bounds(conn: Conn, member_id: str) -> list[Bound]:
    """The start of each fetch of the member's transactions, newest first (one per
    ROWS_PER_FETCH transactions: a thousand for a million)."""
    return [Bound(r["created_at"], r["txn_id"]) for r in await conn.fetch(BOUNDS, member_id)]


async def transactions(conn: Conn, member_id: str, bound: Bound) -> Rendered:
    """ROWS_PER_FETCH transactions from the bound on, newest first: their JSON lines and
    CSV rows (no header)."""
    names = json.dumps(f"members/{member_id}/transactions/", ensure_ascii=False)[:-1]
    row = await conn.fetchrow(TRANSACTIONS, member_id, names, bound.created_at, bound.txn_id)
    assert row is not None  # an aggregate: one row
    return Rendered(row[0] or b"", row[1] or b"", row[2])


async def lots(conn: Conn, member_id: str) -> AsyncIterator[Rendered]:
    async for row in conn.cursor(LOTS, member_id, prefetch=PREFETCH):
        yield Rendered(row[0], b"", row[1])


async def holds(conn: Conn, member_id: str) -> AsyncIterator[Rendered]:
    async for row in conn.cursor(HOLDS, member_id, prefetch=PREFETCH):
        yield Rendered(row[0], b"", row[1])
