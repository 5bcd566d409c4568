"""Domain errors: raised by domain and store code, turned into google.rpc.Status at the edge.

No gRPC here, so domain modules can raise them. Messages must never carry personal
information: they name fields and rules, not values.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

MAX_REQUEST_ID = 128


class Code(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    UNAVAILABLE = "UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    ABORTED = "ABORTED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class DomainError(Exception):
    code: Code
    reason: str
    message: str
    violations: Sequence[FieldViolation] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    # set on retryable refusals: sent as google.rpc.RetryInfo, so a caller (and the gateway's
    # Retry-After) knows when trying again makes sense
    retry_after_s: float | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code.value} {self.reason}: {self.message}"

    @classmethod
    def internal(cls, message: str) -> DomainError:
        return cls(Code.INTERNAL, "INTERNAL", message)


def invalid_argument(violations: Sequence[FieldViolation]) -> DomainError:
    fields = ", ".join(sorted({v.field for v in violations}))
    return DomainError(Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", f"invalid: {fields}", violations)


def bad_field(field_path: str, description: str) -> DomainError:
    return invalid_argument([FieldViolation(field_path, description)])


def not_found(resource: str) -> DomainError:
    return DomainError(Code.NOT_FOUND, "NOT_FOUND", f"{resource} not found")


def already_exists(reason: str, message: str) -> DomainError:
    return DomainError(Code.ALREADY_EXISTS, reason, message)


def idempotency_key_reused(key_field: str = "request_id") -> DomainError:
    """`key_field` names the request's idempotency key: request_id, or the domain id that is
    one (payment_id, refund_id, hold_id, capture_id)."""
    error = already_exists(
        "IDEMPOTENCY_KEY_REUSED", f"{key_field} was already used with a different request"
    )
    error.metadata = {"key_field": key_field}
    return error


def failed_precondition(reason: str, message: str) -> DomainError:
    return DomainError(Code.FAILED_PRECONDITION, reason, message)


def unavailable(reason: str, message: str, retry_after_s: float | None = None) -> DomainError:
    return DomainError(Code.UNAVAILABLE, reason, message, retry_after_s=retry_after_s)


def permission_denied(reason: str, message: str) -> DomainError:
    return DomainError(Code.PERMISSION_DENIED, reason, message)


def unauthenticated(reason: str, message: str) -> DomainError:
    return DomainError(Code.UNAUTHENTICATED, reason, message)


class ViolationCollector:
    """Gathers every field violation of a request before failing once."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def add(self, field_path: str, description: str) -> None:
        self.violations.append(FieldViolation(field_path, description))

    def require(self, value: str, field_path: str, max_len: int) -> None:
        if not value:
            self.add(field_path, "required")
        elif len(value) > max_len:
            self.add(field_path, f"at most {max_len} characters")

    def bound(self, value: str, field_path: str, max_len: int) -> None:
        if len(value) > max_len:
            self.add(field_path, f"at most {max_len} characters")

    def text(self, value: str, field_path: str, max_len: int, required: bool = True) -> None:
        """Short free text (reason, purpose): bounded, and no control characters, which
        PostgreSQL text cannot hold (NUL) or which would corrupt log and audit lines."""
        if required:
            self.require(value.strip(), field_path, max_len)
        else:
            self.bound(value, field_path, max_len)
        # a printable string has no control character or surrogate; isprintable is the
        # fast test of the common case, the category scan decides the rest
        if not value.isprintable() and any(
            unicodedata.category(ch) in ("Cc", "Cs") for ch in value
        ):
            self.add(field_path, "must not contain control characters")

    def request_id(self, value: str, field_path: str = "request_id") -> None:
        """An idempotency key: 1-128 printable characters."""
        self.require(value, field_path, MAX_REQUEST_ID)
        if value and not value.isprintable():
            self.add(field_path, "must be printable")

    def raise_if_any(self) -> None:
        if self.violations:
            raise invalid_argument(self.violations)
