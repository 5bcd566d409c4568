"""SQL of data-subject requests (migrations 004, 005): requests, their timeline, deadline
extensions, and the lock that keeps one fulfilment of a request at a time."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.privacy.domain.consent import Channel
from services.privacy.domain.data_requests import (
    OPEN_STATES,
    DataRequest,
    DeadlineExtension,
    DeletionOutcome,
    Explanation,
    ListFilter,
    ListPosition,
    RequestType,
    State,
    Step,
    StepFailure,
    StepName,
    TimelineEvent,
    VerificationMethod,
)
from services.runtime.db import Conn

# one fulfilment of a request at a time across replicas (namespace "dsrf", key per request)
FULFIL_LOCK_NAMESPACE = 0x64737266


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


_NAMES = (
    "id, member_id, type, channel, state, create_request_id, create_request_hash, created_at,"
    " updated_at, received_on, initial_working_days, working_days, due_date, due_at,"
    " deadline_provisional, extensions, purposes, transactions, correction_fields,"
    " correction_ciphertext,"
    " code_hash, code_expires_at, code_attempts_left, codes_issued, verification_method,"
    " attestation_method, attestation_reference, verified_at, approve_request_id, steps,"
    " next_attempt_at, attempts, rejection_reason, deletion_outcome, explanation, closed_at,"
    " step_failure, close_request_id, close_request_hash"
)
_COLUMNS = [c.strip() for c in _NAMES.split(",")]
_BYTES = ("create_request_hash", "correction_ciphertext", "code_hash", "close_request_hash")
_ARRAYS = ("purposes", "transactions", "correction_fields")


# --- the JSON columns: the same keys as ever (the rows outlive this code) ---------------------


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _steps_json(steps: Sequence[Step]) -> str:
    return json.dumps(
        [{"name": s.name, "done_at": _time(s.done_at), "last_error": s.last_error} for s in steps]
    )


def _steps_of(raw: str) -> tuple[Step, ...]:
    return tuple(
        Step(
            StepName(s["name"]),
            datetime.fromisoformat(s["done_at"]) if s["done_at"] else None,
            s["last_error"],
        )
        for s in json.loads(raw)
    )


def _extensions_json(extensions: Sequence[DeadlineExtension]) -> str:
    return json.dumps(
        [
            {
                "extra_working_days": e.extra_working_days,
                "reason": e.reason,
                "at": e.at.isoformat(),
                "actor": e.actor,
            }
            for e in extensions
        ]
    )


def _extensions_of(raw: str) -> tuple[DeadlineExtension, ...]:
    return tuple(
        DeadlineExtension(
            e["extra_working_days"], e["reason"], datetime.fromisoformat(e["at"]), e["actor"]
        )
        for e in json.loads(raw)
    )


def _explanation_json(explanation: Explanation | None) -> str | None:
    if explanation is None:
        return None
    return json.dumps({"rules": explanation.rules, "transactions": list(explanation.transactions)})


def _explanation_of(raw: str | None) -> Explanation | None:
    if not raw:
        return None
    doc = json.loads(raw)
    return Explanation(doc["rules"], tuple(doc["transactions"]))


def _failure_json(failure: StepFailure | None) -> str | None:
    if failure is None:
        return None
    doc: dict[str, Any] = {
        "step": failure.step,
        "service": failure.service,
        "code": failure.code,
        "reason": failure.reason,
        "fields": list(failure.fields),
        "retries_exhausted": failure.retries_exhausted,
        "at": failure.at.isoformat(),
    }
    return json.dumps(doc)


def _failure_of(raw: str | None) -> StepFailure | None:
    if not raw:
        return None
    doc = json.loads(raw)
    return StepFailure(
        StepName(doc["step"]),
        doc["service"],
        doc["code"],
        doc["reason"],
        tuple(doc["fields"]),
        doc["retries_exhausted"],
        datetime.fromisoformat(doc["at"]),
    )


# --- rows ---------------------------------------------------------------------------------


def _request(r: asyncpg.Record) -> DataRequest:
    values = dict(r)
    for column in _BYTES:
        if values[column] is not None:
            values[column] = bytes(values[column])
    for column in _ARRAYS:
        values[column] = tuple(values[column])
    return DataRequest(
        **{
            **values,
            "type": RequestType(values["type"]),
            "channel": Channel(values["channel"]) if values["channel"] else None,
            "state": State(values["state"]),
            "verification_method": VerificationMethod(values["verification_method"]),
            "deletion_outcome": DeletionOutcome(values["deletion_outcome"]),
            "extensions": _extensions_of(values["extensions"]),
            "steps": _steps_of(values["steps"]),
            "explanation": _explanation_of(values["explanation"]),
            "step_failure": _failure_of(values["step_failure"]),
        }
    )


def _values(request: DataRequest) -> list[Any]:
    encoded: dict[str, Any] = {
        "channel": request.channel or "",
        "extensions": _extensions_json(request.extensions),
        "steps": _steps_json(request.steps),
        "explanation": _explanation_json(request.explanation),
        "step_failure": _failure_json(request.step_failure),
        **{column: list(getattr(request, column)) for column in _ARRAYS},
    }
    return [encoded[c] if c in encoded else getattr(request, c) for c in _COLUMNS]


async def insert_request(conn: Conn, request: DataRequest) -> None:
    values = _values(request)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    await conn.execute(
        f"INSERT INTO privacy.data_requests ({_NAMES}) VALUES ({placeholders})", *values
    )


async def save_request(conn: Conn, request: DataRequest) -> None:
    """Writes every mutable column of the request back (the caller holds its lock)."""
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(_COLUMNS, start=1) if name != "id")
    await conn.execute(
        f"UPDATE privacy.data_requests SET {sets} WHERE id = ${_COLUMNS.index('id') + 1}",
        *_values(request),
    )


async def get_request(
    conn: Conn, request_id: str, *, for_update: bool = False
) -> DataRequest | None:
    lock = " FOR UPDATE" if for_update else ""
    r = await conn.fetchrow(
        f"SELECT {_NAMES} FROM privacy.data_requests WHERE id = $1{lock}", request_id
    )
    return _request(r) if r else None


async def find_by_create_request_id(conn: Conn, create_request_id: str) -> DataRequest | None:
    r = await conn.fetchrow(
        f"SELECT {_NAMES} FROM privacy.data_requests WHERE create_request_id = $1",
        create_request_id,
    )
    return _request(r) if r else None


async def list_requests(
    conn: Conn,
    where: ListFilter,
    *,
    overdue_at: datetime | None,
    after: ListPosition | None,
    limit: int,
) -> list[DataRequest]:
    """Open requests first, then by deadline and id (keyset: (closed, due_at, id));
    `overdue_at`: only open requests due before this instant."""
    rows = await conn.fetch(
        f"SELECT {_NAMES} FROM privacy.data_requests"
        " WHERE (cardinality($1::text[]) = 0 OR state = ANY($1))"
        " AND (cardinality($2::text[]) = 0 OR type = ANY($2))"
        " AND ($3 = '' OR member_id = $3)"
        " AND ($4::timestamptz IS NULL OR (state = ANY($5) AND due_at <= $4))"
        " AND ($6::boolean IS NULL OR (closed_at IS NOT NULL, due_at, id) > ($6, $7, $8))"
        " ORDER BY closed_at IS NOT NULL, due_at, id LIMIT $9",
        list(where.states),
        list(where.types),
        where.member_id,
        overdue_at,
        list(OPEN_STATES),
        after.closed if after else None,
        after.due_at if after else None,
        after.id if after else None,
        limit,
    )
    return [_request(r) for r in rows]


async def append_event(conn: Conn, request_id: str, event: TimelineEvent) -> None:
    await conn.execute(
        "INSERT INTO privacy.data_request_events"
        " (data_request_id, state, action, actor, note, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        request_id,
        event.state,
        event.action,
        event.actor,
        event.note,
        event.created_at,
    )


async def events_of(conn: Conn, request_id: str) -> list[TimelineEvent]:
    rows = await conn.fetch(
        "SELECT state, action, actor, note, created_at FROM privacy.data_request_events"
        " WHERE data_request_id = $1 ORDER BY seq",
        request_id,
    )
    return [
        TimelineEvent(State(r["state"]), r["action"], r["actor"], r["note"], r["created_at"])
        for r in rows
    ]


async def open_requests_of_member(conn: Conn, member_id: str) -> list[DataRequest]:
    rows = await conn.fetch(
        f"SELECT {_NAMES} FROM privacy.data_requests WHERE member_id = $1"
        " AND state = ANY($2) ORDER BY created_at FOR UPDATE",
        member_id,
        list(OPEN_STATES),
    )
    return [_request(r) for r in rows]


async def get_extension(conn: Conn, request_id: str, *, key: str) -> bytes | None:
    value = await conn.fetchval(
        "SELECT request_hash FROM privacy.data_request_extensions"
        " WHERE data_request_id = $1 AND request_id = $2",
        request_id,
        key,
    )
    return bytes(value) if value is not None else None


async def insert_extension(conn: Conn, request_id: str, *, key: str, request_hash: bytes) -> None:
    await conn.execute(
        "INSERT INTO privacy.data_request_extensions (data_request_id, request_id, request_hash)"
        " VALUES ($1, $2, $3)",
        request_id,
        key,
        request_hash,
    )


async def due_for_resumption(conn: Conn, now: datetime, limit: int) -> list[str]:
    rows = await conn.fetch(
        # the literal state matches the partial index data_requests_to_resume
        "SELECT id FROM privacy.data_requests WHERE state = 'IN_PROGRESS'"
        " AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2",
        now,
        limit,
    )
    return [r["id"] for r in rows]
