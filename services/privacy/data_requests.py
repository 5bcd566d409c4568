"""Data-subject requests (PIPL Art. 44-50): types, lifecycle, identity codes. Pure rules.

Lifecycle: RECEIVED -> IDENTITY_VERIFIED -> IN_PROGRESS -> COMPLETED, or REJECTED (with a
reason told to the member, Art. 50) or CANCELLED (the member withdrew it). Nothing is done
for the member before their identity is verified; every other move is FAILED_PRECONDITION,
a second rejection or cancellation too unless it replays the first (same request_id and
payload).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from services.runtime.errors import (
    DomainError,
    FieldViolation,
    bad_field,
    failed_precondition,
    idempotency_key_reused,
    invalid_argument,
    permission_denied,
)

if TYPE_CHECKING:
    from services.privacy.store_requests import RequestRow

TYPES = (
    "ACCESS",
    "PORTABILITY",
    "CORRECTION",
    "DELETION",
    "EXPLANATION",
    "RESTRICTION",
    "CONSENT_WITHDRAWAL",
)
RECEIVED = "RECEIVED"
IDENTITY_VERIFIED = "IDENTITY_VERIFIED"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
REJECTED = "REJECTED"
CANCELLED = "CANCELLED"
FINAL_STATES = frozenset({COMPLETED, REJECTED, CANCELLED})

# what each action may start from; anything else is an illegal transition
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "issue_code": frozenset({RECEIVED}),
    "verify": frozenset({RECEIVED}),
    "approve": frozenset({IDENTITY_VERIFIED}),
    "reject": frozenset({RECEIVED, IDENTITY_VERIFIED, IN_PROGRESS}),
    "cancel": frozenset({RECEIVED, IDENTITY_VERIFIED}),
    "extend": frozenset({RECEIVED, IDENTITY_VERIFIED, IN_PROGRESS}),
}

# fulfilment steps per type, in order; a request resumes at the first step not done
STEPS: dict[str, tuple[str, ...]] = {
    "ACCESS": ("export.build",),
    "PORTABILITY": ("export.build",),
    "CORRECTION": ("accounts.update",),
    # the key first: from then on the member's ciphertext anywhere is unreadable, even if
    # accounts or points are down for a while
    "DELETION": ("subject_key.destroy", "accounts.erase", "points.restrict"),
    "EXPLANATION": ("points.explain",),
    "RESTRICTION": ("processing.pause",),
    "CONSENT_WITHDRAWAL": ("consents.withdraw",),
}

CODE_DIGITS = 8
CODE_TTL = timedelta(minutes=10)
CODE_ATTEMPTS = 5
# each code resets the attempts: bounding the codes bounds the guesses per request
MAX_CODES_ISSUED = 5
MAX_PURPOSES = 16
MAX_TRANSACTIONS = 20
MAX_REASON_CHARS = 500
MAX_REFERENCE_CHARS = 128
ATTESTATION_METHOD = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
TRANSACTION_NAME = re.compile(r"^members/([a-z0-9]{1,40})/transactions/([0-9]{1,19})$")
WALLET_ROLE = "wallet-backend"
CORRECTABLE = ("phone", "email", "display_name")


def new_request_id() -> str:
    """`dr` + 20 lower-case base32 characters (100 random bits): an AIP-122 resource id."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "dr" + "".join(secrets.choice(alphabet) for _ in range(20))


# how each refused action reads in ILLEGAL_TRANSITION's message (action names are not verbs)
REFUSALS: dict[str, str] = {
    "issue_code": "cannot get a verification code",
    "verify": "cannot be verified",
    "approve": "cannot be approved",
    "reject": "cannot be rejected",
    "cancel": "cannot be cancelled",
    "extend": "cannot have its deadline extended",
}


def illegal_transition(action: str, state: str, why: str = "") -> DomainError:
    """FAILED_PRECONDITION `ILLEGAL_TRANSITION`, e.g. "a request in state COMPLETED cannot
    be rejected"; `why` adds the cause when the state alone is not it."""
    message = f"a request in state {state} {REFUSALS[action]}"
    error = failed_precondition("ILLEGAL_TRANSITION", f"{message}: {why}" if why else message)
    error.metadata = {"state": state, "action": action}
    return error


def require_allowed(action: str, state: str) -> None:
    if state not in ALLOWED_FROM[action]:
        raise illegal_transition(action, state)


def close_fingerprint(action: str, reason: str = "") -> bytes:
    """Of a rejection or cancellation: the method enters it, so a key used to reject cannot
    cancel (nor the other way round)."""
    return hashlib.sha256(json.dumps([action, reason]).encode()).digest()


def closed_by(row: RequestRow, key: str, fingerprint: bytes) -> bool:
    """Whether this call repeats the one that closed the request (same key, same payload);
    the same key with another payload is refused. Without a key nothing is a repeat."""
    if not key or row.close_request_id != key:
        return False
    assert row.close_request_hash is not None, "a closing key is stored with its fingerprint"
    if not hmac.compare_digest(row.close_request_hash, fingerprint):
        raise idempotency_key_reused()
    return True


def with_close_key(row: RequestRow, key: str, fingerprint: bytes) -> RequestRow:
    if not key:
        return row
    return replace(row, close_request_id=key, close_request_hash=fingerprint)


@dataclass(frozen=True)
class NewRequest:
    member_id: str
    type: str
    channel: str
    purposes: tuple[str, ...] = ()
    transactions: tuple[str, ...] = ()
    correction: tuple[tuple[str, str], ...] = ()  # (field, new value), personal information
    working_days: int = 0  # 0: the regulation's default

    def fingerprint(self, keyed_correction: bytes) -> bytes:
        """Idempotency fingerprint; the correction enters only as a keyed hash."""
        canonical = json.dumps(
            {
                "member": self.member_id,
                "type": self.type,
                "channel": self.channel,
                "purposes": list(self.purposes),
                "transactions": list(self.transactions),
                "correction": keyed_correction.hex(),
                "working_days": self.working_days,
            },
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).digest()


def check_type_fields(new: NewRequest) -> None:
    """Each type takes only its own fields (INVALID_ARGUMENT naming the field otherwise)."""
    violations: list[FieldViolation] = []
    wants = {
        "purposes": new.type == "CONSENT_WITHDRAWAL",
        "correction": new.type == "CORRECTION",
        "transactions": new.type == "EXPLANATION",
    }
    given = {
        "purposes": bool(new.purposes),
        "correction": bool(new.correction),
        "transactions": bool(new.transactions),
    }
    for name, wanted in wants.items():
        path = f"data_request.{name}"
        if given[name] and not wanted:
            violations.append(FieldViolation(path, f"only for {_owner(name)} requests"))
        if wanted and not given[name] and name != "transactions":
            violations.append(FieldViolation(path, "required for this type"))
    violations += _purpose_violations(new.purposes) + _transaction_violations(new)
    if violations:
        raise invalid_argument(violations)


def _owner(name: str) -> str:
    return {"purposes": "CONSENT_WITHDRAWAL", "correction": "CORRECTION"}.get(name, "EXPLANATION")


def _purpose_violations(purposes: Sequence[str]) -> list[FieldViolation]:
    out = []
    if len(purposes) > MAX_PURPOSES:
        out.append(FieldViolation("data_request.purposes", f"at most {MAX_PURPOSES}"))
    if len(set(purposes)) != len(purposes):
        out.append(FieldViolation("data_request.purposes", "each purpose at most once"))
    return out


def _transaction_violations(new: NewRequest) -> list[FieldViolation]:
    out = []
    if len(new.transactions) > MAX_TRANSACTIONS:
        out.append(FieldViolation("data_request.transactions", f"at most {MAX_TRANSACTIONS}"))
    for i, name in enumerate(new.transactions):
        match = TRANSACTION_NAME.fullmatch(name)
        if match is None or match.group(1) != new.member_id:
            out.append(
                FieldViolation(
                    f"data_request.transactions[{i}]",
                    "a transaction of the member: members/{member_id}/transactions/{id}",
                )
            )
    return out


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_problem(
    expires_at: datetime | None, attempts_left: int, now: datetime
) -> DomainError | None:
    """Why no code can be checked now, if so (checked before comparing)."""
    if expires_at is None:
        return failed_precondition(
            "NO_VERIFICATION_CODE", "no verification code was issued for this request"
        )
    if attempts_left <= 0:
        return failed_precondition(
            "VERIFICATION_CODE_USED_UP", "the verification code is used up; issue a new one"
        )
    if now >= expires_at:
        return failed_precondition(
            "VERIFICATION_CODE_EXPIRED", "the verification code expired; issue a new one"
        )
    return None


def wrong_code(attempts_left: int) -> DomainError:
    error = bad_field("code", "does not match the code issued")
    error.reason = "VERIFICATION_CODE_WRONG"
    error.metadata = {"attempts_left": str(attempts_left)}
    return error


def check_attestation(role: str, method: str, reference: str) -> None:
    if role != WALLET_ROLE:
        raise permission_denied(
            "ATTESTATION_NOT_ALLOWED", "only the wallet backend can attest a member's identity"
        )
    violations = []
    if not ATTESTATION_METHOD.fullmatch(method):
        violations.append(
            FieldViolation("attestation.method", "a lower-case identifier, e.g. face_match")
        )
    if not 0 < len(reference) <= MAX_REFERENCE_CHARS or not reference.isprintable():
        violations.append(
            FieldViolation("attestation.reference", f"1-{MAX_REFERENCE_CHARS} printable characters")
        )
    if violations:
        raise invalid_argument(violations)


def checked_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        error = bad_field("reason", "required: a rejection must say why (PIPL Art. 50)")
        error.reason = "REASON_REQUIRED"
        raise error
    if len(text) > MAX_REASON_CHARS or not text.isprintable():
        raise bad_field("reason", f"at most {MAX_REASON_CHARS} printable characters")
    return text
