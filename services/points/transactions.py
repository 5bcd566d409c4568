"""A member's ledger history (ListTransactions) and how each transaction came about
(ExplainTransaction), read from the transactions the ledger stored with their explanation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.points.restrictions import refuse_if_restricted
from services.points.store import transactions as store
from services.runtime import paging
from services.runtime.errors import bad_field, not_found

# the idempotency key's prefix -> the id it wraps (`payment:p-1` is payment_id p-1)
REFERENCE_TYPES = {
    "payment": "payment_id",
    "refund": "refund_id",
    "maturation": "lot_id",
    "expiry": "lot_id",
    "grant": "request_id",
    "hold": "hold_id",
    "capture": "capture_id",
    "release": "request_id",
    "hold_expiry": "hold_id",
    "redeem": "request_id",
    "reward": "request_id",
    "referral": "member_id",  # the referred member, in both members' ledgers
}
MAX_KINDS = 20
MAX_KIND_LEN = 40


@dataclass(frozen=True)
class Reference:
    type: str
    value: str


@dataclass(frozen=True)
class Entry:
    """One transaction as ListTransactions shows it."""

    member_id: str
    row: store.TransactionRow
    reference: Reference
    transfers: tuple[store.TransferRow, ...]


@dataclass(frozen=True)
class Step:
    name: str
    value: str
    note: str


@dataclass(frozen=True)
class Explanation:
    member_id: str
    txn_id: int
    kind: str
    points: int
    rule_version: int
    steps: tuple[Step, ...]
    sentence: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Query:
    member_id: str
    kinds: tuple[str, ...]
    start: datetime | None
    end: datetime | None
    page_size: int
    page_token: str


def reference_of(idempotency_key: str) -> Reference:
    """What caused a transaction, from its idempotency key (`<prefix>:<id>`)."""
    prefix, sep, value = idempotency_key.partition(":")
    if sep and prefix in REFERENCE_TYPES:
        return Reference(REFERENCE_TYPES[prefix], value)
    # a key of a kind added later: shown whole rather than guessed at
    return Reference("idempotency_key", idempotency_key)


def steps_of(explanation: dict[str, Any]) -> tuple[Step, ...]:
    raw = explanation.get("steps")
    if not isinstance(raw, list):
        return ()
    return tuple(
        Step(str(s.get("name", "")), str(s.get("value", "")), str(s.get("note", "")))
        for s in raw
        if isinstance(s, dict)
    )


def _filter_key(query: Query) -> dict[str, Any]:
    """What a page token is bound to: the same member and filter."""
    return {
        "m": query.member_id,
        "k": sorted(query.kinds),
        "s": query.start.isoformat() if query.start else "",
        "e": query.end.isoformat() if query.end else "",
    }


def _position(query: Query) -> tuple[datetime, int] | None:
    position = paging.decode_token(query.page_token, _filter_key(query))
    if position is None:
        return None
    try:
        return datetime.fromisoformat(str(position["t"])), int(position["i"])
    except (KeyError, TypeError, ValueError) as exc:
        raise bad_field("page_token", "not a page token of this list") from exc


def validate_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    if len(kinds) > MAX_KINDS:
        raise bad_field("kinds", f"at most {MAX_KINDS} kinds")
    for kind in kinds:
        if not (0 < len(kind) <= MAX_KIND_LEN and kind.replace("_", "").isalnum()):
            raise bad_field("kinds", "each kind is a lower-case word such as `settlement`")
    return tuple(kinds)


class Transactions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def list(self, query: Query) -> tuple[list[Entry], str]:
        """A page newest first, and the token of the next ("" at the end)."""
        size = paging.page_size(query.page_size)
        window = store.Window(query.kinds, query.start, query.end, _position(query))
        async with self._pool.acquire() as conn:
            if not await store.member_exists(conn, query.member_id):
                raise not_found("member")
            await refuse_if_restricted(conn, query.member_id)
            rows = await store.list_transactions(conn, query.member_id, window, size + 1)
            page = rows[:size]
            transfers = await store.transfers_of(conn, query.member_id, [r.txn_id for r in page])
        entries = [_entry(query.member_id, row, transfers) for row in page]
        if len(rows) <= size:
            return entries, ""
        last = page[-1]
        position = {"t": last.created_at.isoformat(), "i": last.txn_id}
        return entries, paging.encode_token(position, _filter_key(query))

    async def explain(self, member_id: str, txn_id: int) -> Explanation:
        async with self._pool.acquire() as conn:
            await refuse_if_restricted(conn, member_id)
            row = await store.get_transaction(conn, member_id, txn_id)
        if row is None:  # another member's transaction is not found either
            raise not_found("transaction")
        doc = row.explanation
        return Explanation(
            member_id,
            row.txn_id,
            row.kind,
            row.points,
            row.rule_version,
            steps_of(doc),
            str(doc.get("sentence", "")),
            doc,
        )


def _entry(member_id: str, row: store.TransactionRow, transfers: list[store.TransferRow]) -> Entry:
    mine = tuple(t for t in transfers if t.txn_id == row.txn_id)
    return Entry(member_id, row, reference_of(row.idempotency_key), mine)
