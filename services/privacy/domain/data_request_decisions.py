"""The officers' decisions on data-subject requests: rejecting (with the reason told to the
member, PIPL Art. 50) or cancelling, each repeatable under its idempotency key, and extending
the deadline. Pure rules (data_requests.py runs them; approval starts fulfilment:
domain/data_request_fulfilment.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from datetime import datetime

from services.privacy.domain import deadlines
from services.privacy.domain.data_requests import (
    DataRequest,
    DeadlineExtension,
    State,
    Transition,
)
from services.runtime.errors import bad_field, idempotency_key_reused

REASON_REQUIRED = "REASON_REQUIRED"
MAX_REASON_CHARS = 500


def checked_reason(reason: str) -> str:
    """A rejection's reason, told to the member (PIPL Art. 50)."""
    text = reason.strip()
    if not text:
        error = bad_field("reason", "required: a rejection must say why (PIPL Art. 50)")
        error.reason = REASON_REQUIRED
        raise error
    if len(text) > MAX_REASON_CHARS or not text.isprintable():
        raise bad_field("reason", f"at most {MAX_REASON_CHARS} printable characters")
    return text


def close_fingerprint(action: Transition, reason: str = "") -> bytes:
    """Of a rejection or cancellation: the method enters it, so a key used to reject cannot
    cancel (nor the other way round)."""
    return hashlib.sha256(json.dumps([action, reason]).encode()).digest()


def extend_fingerprint(extra_days: int, reason: str) -> bytes:
    return hashlib.sha256(json.dumps([extra_days, reason]).encode()).digest()


def closed_by(request: DataRequest, key: str, fingerprint: bytes) -> bool:
    """Whether this call repeats the one that closed the request (same key, same payload);
    the same key with another payload is refused. Without a key nothing is a repeat."""
    if not key or request.close_request_id != key:
        return False
    assert request.close_request_hash is not None, "a closing key is stored with its hash"
    if not hmac.compare_digest(request.close_request_hash, fingerprint):
        raise idempotency_key_reused()
    return True


def closed(
    request: DataRequest, state: State, *, key: str, fingerprint: bytes, now: datetime
) -> DataRequest:
    """The request closed in `state` (REJECTED, CANCELLED), with the key that closed it."""
    if key:
        request = replace(request, close_request_id=key, close_request_hash=fingerprint)
    return replace(request, state=state, closed_at=now, updated_at=now, next_attempt_at=None)


def rejected(
    request: DataRequest, reason: str, *, key: str, fingerprint: bytes, now: datetime
) -> DataRequest:
    """REJECTED with the reason told to the member (PIPL Art. 50)."""
    done = closed(request, State.REJECTED, key=key, fingerprint=fingerprint, now=now)
    return replace(done, rejection_reason=reason)


def extended(
    request: DataRequest,
    *,
    extra_days: int,
    reason: str,
    actor: str,
    now: datetime,
    calendar: deadlines.WorkingCalendar,
) -> DataRequest:
    """The deadline moved on by `extra_days` working days (checked by deadlines.extend)."""
    current = deadlines.Deadline(
        request.received_on,
        request.due_date,
        request.due_at,
        request.working_days,
        request.deadline_provisional,
    )
    moved = deadlines.extend(current, extra_days, reason, calendar)
    entry = DeadlineExtension(extra_days, moved.extensions[-1].reason, now, actor)
    return replace(
        request,
        working_days=moved.working_days,
        due_date=moved.due_date,
        due_at=moved.due,
        deadline_provisional=moved.provisional,
        extensions=(*request.extensions, entry),
        updated_at=now,
    )
