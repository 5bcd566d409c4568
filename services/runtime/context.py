"""Per-request context: request id and verified caller, carried in contextvars."""

from __future__ import annotations

import contextvars
import uuid

from services.runtime.identity import Caller

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)

MAX_REQUEST_ID_LEN = 128


def new_request_id() -> str:
    return uuid.uuid4().hex


def set_request_id(value: str) -> contextvars.Token[str]:
    return _request_id.set(value)


def request_id() -> str:
    return _request_id.get()


def set_caller(caller: Caller | None) -> contextvars.Token[Caller | None]:
    return _caller.set(caller)


def current_caller() -> Caller:
    caller = _caller.get()
    if caller is None:
        raise RuntimeError("no verified caller in this context")
    return caller
