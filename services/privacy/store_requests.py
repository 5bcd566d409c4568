"""SQL of data-subject requests (migrations 004, 005): requests, timeline, steps, erasures."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import asyncpg

from services.runtime.db import Conn

# one fulfilment of a request at a time across replicas (namespace "dsrf", key per request)
FULFIL_LOCK_NAMESPACE = 0x64737266

OPEN_STATES = ("RECEIVED", "IDENTITY_VERIFIED", "IN_PROGRESS")


def _fulfil_key(request_id: str) -> int:
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big", signed=True)


async def try_lock_fulfilment(conn: Conn, request_id: str) -> bool:
    """Session-level: held across the run's transactions and its calls to other services."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_lock($1, $2)", FULFIL_LOCK_NAMESPACE, _fulfil_key(request_id)
        )
    )


async def unlock_fulfilment(conn: Conn, request_id: str) -> None:
    """A pooled connection is not reset when released: a lock whose unlock failed dies with
    its terminated connection rather than outlive the run."""
    try:
        await conn.execute(
            "SELECT pg_advisory_unlock($1, $2)", FULFIL_LOCK_NAMESPACE, _fulfil_key(request_id)
        )
    except BaseException:
        conn.terminate()
        raise


async def fulfilment_idle(conn: Conn, request_id: str) -> bool:
    """In a transaction: no run holds the request, and none can start before it commits."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock($1, $2)",
            FULFIL_LOCK_NAMESPACE,
            _fulfil_key(request_id),
        )
    )


@dataclass
class Step:
    name: str
    done_at: datetime | None = None
    last_error: str = ""


@dataclass
class RequestRow:
    id: str
    member_id: str
    type: str
    channel: str
    state: str
    create_request_id: str
    create_request_hash: bytes
    created_at: datetime
    updated_at: datetime
    received_on: date
    initial_working_days: int
    working_days: int
    due_date: date
    due_at: datetime
    deadline_provisional: bool
    extensions: list[dict[str, Any]] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)
    transactions: list[str] = field(default_factory=list)
    correction_fields: list[str] = field(default_factory=list)
    correction_ciphertext: bytes | None = None
    code_hash: bytes | None = None
    code_expires_at: datetime | None = None
    code_attempts_left: int = 0
    codes_issued: int = 0
    verification_method: str = ""
    attestation_method: str = ""
    attestation_reference: str = ""
    verified_at: datetime | None = None
    approve_request_id: str | None = None
    steps: list[Step] = field(default_factory=list)
    next_attempt_at: datetime | None = None
    attempts: int = 0
    rejection_reason: str = ""
    deletion_outcome: str = ""
    explanation: dict[str, Any] | None = None
    closed_at: datetime | None = None
    # why fulfilment stopped and waits for an officer (fulfilment.py); None while it goes on
    step_failure: dict[str, Any] | None = None
    # the idempotency key of the rejection or cancellation that closed the request
    close_request_id: str | None = None
    close_request_hash: bytes | None = None


@dataclass(frozen=True)
class EventRow:
    state: str
    action: str
    actor: str
    note: str
    created_at: datetime


_COLUMNS = (
    "id, member_id, type, channel, state, create_request_id, create_request_hash, created_at,"
    " updated_at, received_on, initial_working_days, working_days, due_date, due_at,"
    " deadline_provisional, extensions, purposes, transactions, correction_fields,"
    " correction_ciphertext,"
    " code_hash, code_expires_at, code_attempts_left, codes_issued, verification_method,"
    " attestation_method, attestation_reference, verified_at, approve_request_id, steps,"
    " next_attempt_at, attempts, rejection_reason, deletion_outcome, explanation, closed_at,"
    " step_failure, close_request_id, close_request_hash"
)
_JSON_COLUMNS = ("extensions", "steps", "explanation", "step_failure")


def _steps_json(steps: Sequence[Step]) -> str:
    return json.dumps(
        [
            {
                "name": s.name,
                "done_at": s.done_at.isoformat() if s.done_at else None,
                "last_error": s.last_error,
            }
            for s in steps
        ]
    )


def _steps_of(raw: str) -> list[Step]:
    return [
        Step(
            s["name"],
            datetime.fromisoformat(s["done_at"]) if s["done_at"] else None,
            s["last_error"],
        )
        for s in json.loads(raw)
    ]


def _row(r: asyncpg.Record) -> RequestRow:
    values = dict(r)
    values["extensions"] = json.loads(values["extensions"])
    values["steps"] = _steps_of(values["steps"])
    for column in ("explanation", "step_failure"):
        values[column] = json.loads(values[column]) if values[column] else None
    for column in (
        "create_request_hash",
        "correction_ciphertext",
        "code_hash",
        "close_request_hash",
    ):
        if values[column] is not None:
            values[column] = bytes(values[column])
    values["purposes"] = list(values["purposes"])
    values["transactions"] = list(values["transactions"])
    values["correction_fields"] = list(values["correction_fields"])
    return RequestRow(**values)


def _values(row: RequestRow) -> list[Any]:
    values: list[Any] = []
    for name in (c.strip() for c in _COLUMNS.split(",")):
        value = getattr(row, name)
        if name == "steps":
            value = _steps_json(value)
        elif name in _JSON_COLUMNS:
            value = json.dumps(value) if value is not None else None
        values.append(value)
    return values


async def insert_request(conn: Conn, row: RequestRow) -> None:
    values = _values(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO privacy.data_requests ({_COLUMNS}) VALUES ({placeholders})", *values
    )


async def save_request(conn: Conn, row: RequestRow) -> None:
    """Writes every mutable column of the row back (the caller holds its lock)."""
    names = [c.strip() for c in _COLUMNS.split(",")]
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=1) if name != "id")
    await conn.execute(
        f"UPDATE privacy.data_requests SET {sets} WHERE id = ${names.index('id') + 1}",
        *_values(row),
    )


async def get_request(conn: Conn, request_id: str, for_update: bool = False) -> RequestRow | None:
    lock = " FOR UPDATE" if for_update else ""
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM privacy.data_requests WHERE id = $1{lock}", request_id
    )
    return _row(r) if r else None


async def find_by_create_request_id(conn: Conn, create_request_id: str) -> RequestRow | None:
    r = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM privacy.data_requests WHERE create_request_id = $1",
        create_request_id,
    )
    return _row(r) if r else None


@dataclass(frozen=True)
class ListFilter:
    states: Sequence[str]
    types: Sequence[str]
    member_id: str
    overdue_at: datetime | None  # only open requests due before this instant


async def list_requests(
    conn: Conn, where: ListFilter, after: tuple[bool, datetime, str] | None, limit: int
) -> list[RequestRow]:
    """Open requests first, then by deadline and id (keyset: (closed, due_at, id))."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.data_requests"
        " WHERE (cardinality($1::text[]) = 0 OR state = ANY($1))"
        " AND (cardinality($2::text[]) = 0 OR type = ANY($2))"
        " AND ($3 = '' OR member_id = $3)"
        " AND ($4::timestamptz IS NULL OR (state = ANY($5) AND due_at <= $4))"
        " AND ($6::boolean IS NULL OR (closed_at IS NOT NULL, due_at, id) > ($6, $7, $8))"
        " ORDER BY closed_at IS NOT NULL, due_at, id LIMIT $9",
        list(where.states),
        list(where.types),
        where.member_id,
        where.overdue_at,
        list(OPEN_STATES),
        after[0] if after else None,
        after[1] if after else None,
        after[2] if after else None,
        limit,
    )
    return [_row(r) for r in rows]


async def append_event(
    conn: Conn, request_id: str, state: str, action: str, actor: str, note: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO privacy.data_request_events"
        " (data_request_id, state, action, actor, note, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        request_id,
        state,
        action,
        actor,
        note,
        at,
    )


async def events_of(conn: Conn, request_id: str) -> list[EventRow]:
    rows = await conn.fetch(
        "SELECT state, action, actor, note, created_at FROM privacy.data_request_events"
        " WHERE data_request_id = $1 ORDER BY seq",
        request_id,
    )
    return [EventRow(**dict(r)) for r in rows]


async def requests_of_member(conn: Conn, member_id: str, limit: int) -> list[RequestRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.data_requests WHERE member_id = $1"
        " ORDER BY created_at LIMIT $2",
        member_id,
        limit,
    )
    return [_row(r) for r in rows]


async def open_requests_of_member(conn: Conn, member_id: str) -> list[RequestRow]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM privacy.data_requests WHERE member_id = $1"
        " AND state = ANY($2) ORDER BY created_at FOR UPDATE",
        member_id,
        list(OPEN_STATES),
    )
    return [_row(r) for r in rows]


async def all_erasures(conn: Conn) -> list[tuple[str, str, datetime]]:
    """(member id, data request id, time) of every erasure, oldest first."""
    rows = await conn.fetch(
        "SELECT member_id, data_request_id, created_at FROM privacy.erasures ORDER BY created_at"
    )
    return [(r["member_id"], r["data_request_id"], r["created_at"]) for r in rows]


async def get_extension(conn: Conn, request_id: str, key: str) -> bytes | None:
    value = await conn.fetchval(
        "SELECT request_hash FROM privacy.data_request_extensions"
        " WHERE data_request_id = $1 AND request_id = $2",
        request_id,
        key,
    )
    return bytes(value) if value is not None else None


async def insert_extension(conn: Conn, request_id: str, key: str, request_hash: bytes) -> None:
    await conn.execute(
        "INSERT INTO privacy.data_request_extensions (data_request_id, request_id, request_hash)"
        " VALUES ($1, $2, $3)",
        request_id,
        key,
        request_hash,
    )


async def due_for_resumption(conn: Conn, now: datetime, limit: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT id FROM privacy.data_requests WHERE state = 'IN_PROGRESS'"
        " AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
        now,
        limit,
    )
    return [r["id"] for r in rows]


async def insert_erasure(
    conn: Conn,
    member_id: str,
    data_request_id: str,
    legal_basis: str,
    retention_end_at: datetime,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO privacy.erasures"
        " (member_id, data_request_id, legal_basis, retention_end_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (member_id) DO NOTHING",
        member_id,
        data_request_id,
        legal_basis,
        retention_end_at,
        at,
    )


async def get_erasure(conn: Conn, member_id: str) -> tuple[str, datetime] | None:
    r = await conn.fetchrow(
        "SELECT legal_basis, retention_end_at FROM privacy.erasures WHERE member_id = $1",
        member_id,
    )
    return (r["legal_basis"], r["retention_end_at"]) if r else None


async def with_live_keys(conn: Conn, member_ids: Sequence[str]) -> set[str]:
    """Those of the members whose data key exists and was not destroyed."""
    rows = await conn.fetch(
        "SELECT subject_id FROM privacy.subject_keys"
        " WHERE subject_id = ANY($1::text[]) AND destroyed_at IS NULL",
        list(member_ids),
    )
    return {r["subject_id"] for r in rows}
