"""Receiving data-subject requests and verifying the member's identity: what each type may
carry, the new request and its deadline, one-time codes and the wallet's attestations, and
the reason a rejection must give. Pure rules (data_requests.py runs them)."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from services.privacy.domain import deadlines
from services.privacy.domain.consent import Channel
from services.privacy.domain.data_requests import (
    STEPS,
    DataRequest,
    RequestType,
    State,
    Step,
    VerificationMethod,
    new_request_id,
)
from services.privacy.domain.service_calls import ServiceCallError
from services.runtime.errors import (
    Code,
    DomainError,
    FieldViolation,
    bad_field,
    failed_precondition,
    invalid_argument,
    permission_denied,
    unavailable,
)

NO_VERIFICATION_CODE = "NO_VERIFICATION_CODE"
VERIFICATION_CODE_USED_UP = "VERIFICATION_CODE_USED_UP"
VERIFICATION_CODE_EXPIRED = "VERIFICATION_CODE_EXPIRED"
VERIFICATION_CODE_WRONG = "VERIFICATION_CODE_WRONG"
ATTESTATION_NOT_ALLOWED = "ATTESTATION_NOT_ALLOWED"

CODE_DIGITS = 8
CODE_TTL = timedelta(minutes=10)
CODE_ATTEMPTS = 5
# each code resets the attempts: bounding the codes bounds the guesses per request
MAX_CODES_ISSUED = 5
MAX_PURPOSES = 16
MAX_TRANSACTIONS = 20
MAX_REFERENCE_CHARS = 128
ATTESTATION_METHOD = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
TRANSACTION_NAME = re.compile(r"^members/([a-z0-9]{1,40})/transactions/([0-9]{1,19})$")
WALLET_ROLE = "wallet-backend"
CORRECTABLE = ("phone", "email", "display_name")
# a leading control character: no caller's request_id (printable) can take such a key
INTERNAL_KEY_PREFIX = "\x1f"


class Change(NamedTuple):
    """A correction's new value of one field (personal information)."""

    field: str
    value: str


@dataclass(frozen=True)
class NewRequest:
    member_id: str
    type: RequestType
    channel: Channel | None
    purposes: tuple[str, ...] = ()
    transactions: tuple[str, ...] = ()
    correction: tuple[Change, ...] = ()
    working_days: int = 0  # 0: the regulation's default

    def fingerprint(self, keyed_correction: bytes) -> bytes:
        """Idempotency fingerprint; the correction enters only as a keyed hash."""
        canonical = json.dumps(
            {
                "member": self.member_id,
                "type": self.type,
                "channel": self.channel or "",
                "purposes": list(self.purposes),
                "transactions": list(self.transactions),
                "correction": keyed_correction.hex(),
                "working_days": self.working_days,
            },
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).digest()

    def correction_json(self) -> bytes:
        """The correction's changes as the JSON privacy encrypts; b"" without any."""
        if not self.correction:
            return b""
        return json.dumps(dict(self.correction), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime
    attempts: int


def received(
    new: NewRequest,
    *,
    key: str,
    fingerprint: bytes,
    ciphertext: bytes | None,
    now: datetime,
    calendar: deadlines.WorkingCalendar,
) -> DataRequest:
    """A request received now, its deadline counted on the calendar."""
    due = deadlines.deadline(now, new.working_days or deadlines.DEFAULT_WORKING_DAYS, calendar)
    return DataRequest(
        id=new_request_id(),
        member_id=new.member_id,
        type=new.type,
        channel=new.channel,
        state=State.RECEIVED,
        create_request_id=key,
        create_request_hash=fingerprint,
        created_at=now,
        updated_at=now,
        received_on=due.received_on,
        initial_working_days=due.working_days,
        working_days=due.working_days,
        due_date=due.due_date,
        due_at=due.due,
        deadline_provisional=due.provisional,
        purposes=new.purposes,
        transactions=new.transactions,
        correction_fields=tuple(sorted(c.field for c in new.correction)),
        correction_ciphertext=ciphertext,
    )


def internal_deletion(
    member_id: str, erased_by: str, *, now: datetime, calendar: deadlines.WorkingCalendar
) -> DataRequest:
    """The DELETION that re-applies an erasure an older backup's restore undid: approved
    by the original request, so it starts IN_PROGRESS."""
    key = f"{INTERNAL_KEY_PREFIX}reapply:{member_id}:{erased_by}"
    request = received(
        NewRequest(member_id, RequestType.DELETION, None),
        key=key,
        fingerprint=hashlib.sha256(key.encode()).digest(),
        ciphertext=None,
        now=now,
        calendar=calendar,
    )
    return replace(
        request,
        state=State.IN_PROGRESS,
        approve_request_id=key,
        steps=tuple(Step(name) for name in STEPS[RequestType.DELETION]),
        next_attempt_at=now,
    )


def check_type_fields(new: NewRequest) -> None:
    """Each type takes only its own fields (INVALID_ARGUMENT naming the field otherwise)."""
    violations: list[FieldViolation] = []
    wants = {
        "purposes": new.type == RequestType.CONSENT_WITHDRAWAL,
        "correction": new.type == RequestType.CORRECTION,
        "transactions": new.type == RequestType.EXPLANATION,
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


def code_issued(request: DataRequest, digest: bytes, now: datetime) -> DataRequest:
    """A new code (its keyed hash) replaces any earlier one and resets the attempts."""
    return replace(
        request,
        codes_issued=request.codes_issued + 1,
        code_hash=digest,
        code_expires_at=now + CODE_TTL,
        code_attempts_left=CODE_ATTEMPTS,
        updated_at=now,
    )


def code_problem(request: DataRequest, now: datetime) -> DomainError | None:
    """Why no code can be checked now, if so (checked before comparing)."""
    expires_at, attempts_left = request.code_expires_at, request.code_attempts_left
    if expires_at is None:
        return failed_precondition(
            NO_VERIFICATION_CODE, "no verification code was issued for this request"
        )
    if attempts_left <= 0:
        return failed_precondition(
            VERIFICATION_CODE_USED_UP, "the verification code is used up; issue a new one"
        )
    if now >= expires_at:
        return failed_precondition(
            VERIFICATION_CODE_EXPIRED, "the verification code expired; issue a new one"
        )
    return None


def code_wrong(request: DataRequest, now: datetime) -> DataRequest:
    """A wrong code uses up one attempt (committed, then refused: wrong_code)."""
    return replace(request, code_attempts_left=request.code_attempts_left - 1, updated_at=now)


def wrong_code(attempts_left: int) -> DomainError:
    error = bad_field("code", "does not match the code issued")
    error.reason = VERIFICATION_CODE_WRONG
    error.metadata = {"attempts_left": str(attempts_left)}
    return error


def check_attestation(role: str, *, method: str, reference: str) -> None:
    if role != WALLET_ROLE:
        raise permission_denied(
            ATTESTATION_NOT_ALLOWED, "only the wallet backend can attest a member's identity"
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


def verified(
    request: DataRequest,
    method: VerificationMethod,
    *,
    attestation_method: str = "",
    reference: str = "",
    now: datetime,
) -> DataRequest:
    return replace(
        request,
        state=State.IDENTITY_VERIFIED,
        verification_method=method,
        attestation_method=attestation_method,
        attestation_reference=reference,
        verified_at=now,
        code_hash=None,  # a code works once
        code_attempts_left=0,
        updated_at=now,
    )


# refusals of a correction's check that depend on what may change before the approval
ACCEPTED_AT_CREATION = frozenset(
    {Code.FAILED_PRECONDITION.value, Code.ALREADY_EXISTS.value, Code.NOT_FOUND.value}
)
ACCOUNTS_UNAVAILABLE = "ACCOUNTS_UNAVAILABLE"


def correction_check_refused(exc: ServiceCallError) -> DomainError | None:
    """What CreateDataRequest answers when accounts' check of a correction failed; None
    when what it refused may change before the approval (the member's status, a phone
    another member holds: for the fulfilment to meet and the officer to judge)."""
    if exc.transient:
        # nothing was recorded: a retry is safe
        return unavailable(ACCOUNTS_UNAVAILABLE, "accounts could not check the correction; retry")
    if exc.code == Code.INVALID_ARGUMENT.value:
        return _correction_refused(exc)
    if exc.code in ACCEPTED_AT_CREATION:
        return None
    # privacy's own setup (its token, its scope): no caller can do anything
    return DomainError.internal("accounts refused to check a correction")


def _correction_refused(exc: ServiceCallError) -> DomainError:
    """Accounts' violations as CreateDataRequest's; any other field refused is privacy's
    own mistake in building the check."""
    known = {f"correction.{name}" for name in CORRECTABLE}
    if not exc.violations or any(v.field not in known for v in exc.violations):
        return DomainError.internal("accounts refused the correction check's request")
    return invalid_argument(
        [FieldViolation(f"data_request.{v.field}", v.description) for v in exc.violations]
    )
