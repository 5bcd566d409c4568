"""Data-subject requests (PIPL Art. 44-50): types, the state machine and the fulfilment plan
of each type. Pure rules; beside them domain/data_request_intake.py (receiving, identity),
domain/data_request_decisions.py (rejecting, cancelling, extending) and
domain/data_request_fulfilment.py (approval, steps, failures). The use cases running them in
transactions are data_requests.py and data_request_fulfilment.py.

Lifecycle: RECEIVED -> IDENTITY_VERIFIED -> IN_PROGRESS -> COMPLETED, or REJECTED (with a
reason told to the member, Art. 50) or CANCELLED (the member withdrew it). Nothing is done
for the member before their identity is verified; every other move is FAILED_PRECONDITION,
a second rejection or cancellation too unless it replays the first (same request_id and
payload).

The values of the enums below are what the database and the audit log hold.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from services.privacy.domain.audit import AuditEvent
from services.privacy.domain.consent import Channel
from services.privacy.domain.exports import Export
from services.runtime.errors import DomainError, failed_precondition

ILLEGAL_TRANSITION = "ILLEGAL_TRANSITION"
FULFILMENT_RUNNING = "FULFILMENT_RUNNING"
TOO_MANY_CODES = "TOO_MANY_CODES"


class RequestType(StrEnum):
    ACCESS = "ACCESS"
    PORTABILITY = "PORTABILITY"
    CORRECTION = "CORRECTION"
    DELETION = "DELETION"
    EXPLANATION = "EXPLANATION"
    RESTRICTION = "RESTRICTION"
    CONSENT_WITHDRAWAL = "CONSENT_WITHDRAWAL"


class State(StrEnum):
    RECEIVED = "RECEIVED"
    IDENTITY_VERIFIED = "IDENTITY_VERIFIED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


FINAL_STATES = frozenset({State.COMPLETED, State.REJECTED, State.CANCELLED})
OPEN_STATES = (State.RECEIVED, State.IDENTITY_VERIFIED, State.IN_PROGRESS)


class Transition(StrEnum):
    """What an officer, the member or the wallet does to a request (ILLEGAL_TRANSITION's
    `action`)."""

    ISSUE_CODE = "issue_code"
    VERIFY = "verify"
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    EXTEND = "extend"


# what each transition may start from; anything else is an illegal transition
ALLOWED_FROM: dict[Transition, frozenset[State]] = {
    Transition.ISSUE_CODE: frozenset({State.RECEIVED}),
    Transition.VERIFY: frozenset({State.RECEIVED}),
    Transition.APPROVE: frozenset({State.IDENTITY_VERIFIED}),
    Transition.REJECT: frozenset({State.RECEIVED, State.IDENTITY_VERIFIED, State.IN_PROGRESS}),
    Transition.CANCEL: frozenset({State.RECEIVED, State.IDENTITY_VERIFIED}),
    Transition.EXTEND: frozenset({State.RECEIVED, State.IDENTITY_VERIFIED, State.IN_PROGRESS}),
}

# how each refused transition reads in ILLEGAL_TRANSITION's message (they are not verbs)
REFUSALS: dict[Transition, str] = {
    Transition.ISSUE_CODE: "cannot get a verification code",
    Transition.VERIFY: "cannot be verified",
    Transition.APPROVE: "cannot be approved",
    Transition.REJECT: "cannot be rejected",
    Transition.CANCEL: "cannot be cancelled",
    Transition.EXTEND: "cannot have its deadline extended",
}


class StepName(StrEnum):
    """The fulfilment steps (data_request_steps.py does each)."""

    EXPORT_BUILD = "export.build"
    ACCOUNTS_UPDATE = "accounts.update"
    SUBJECT_KEY_DESTROY = "subject_key.destroy"
    ACCOUNTS_ERASE = "accounts.erase"
    POINTS_RESTRICT = "points.restrict"
    POINTS_EXPLAIN = "points.explain"
    PROCESSING_PAUSE = "processing.pause"
    CONSENTS_WITHDRAW = "consents.withdraw"


# fulfilment steps per type, in order; a request resumes at the first step not done
STEPS: dict[RequestType, tuple[StepName, ...]] = {
    RequestType.ACCESS: (StepName.EXPORT_BUILD,),
    RequestType.PORTABILITY: (StepName.EXPORT_BUILD,),
    RequestType.CORRECTION: (StepName.ACCOUNTS_UPDATE,),
    # the key first: from then on the member's ciphertext anywhere is unreadable, even if
    # accounts or points are down for a while
    RequestType.DELETION: (
        StepName.SUBJECT_KEY_DESTROY,
        StepName.ACCOUNTS_ERASE,
        StepName.POINTS_RESTRICT,
    ),
    RequestType.EXPLANATION: (StepName.POINTS_EXPLAIN,),
    RequestType.RESTRICTION: (StepName.PROCESSING_PAUSE,),
    RequestType.CONSENT_WITHDRAWAL: (StepName.CONSENTS_WITHDRAW,),
}


class VerificationMethod(StrEnum):
    NONE = ""  # not verified yet
    ONE_TIME_CODE = "ONE_TIME_CODE"
    WALLET_ATTESTATION = "WALLET_ATTESTATION"


class DeletionOutcome(StrEnum):
    NONE = ""  # not a completed deletion
    ERASED = "ERASED"
    RETAINED_RESTRICTED = "RETAINED_RESTRICTED"


class TimelineAction(StrEnum):
    """The timeline's actions (and, prefixed `data_request.`, the audit log's)."""

    CREATED = "created"
    CODE_ISSUED = "verification_code.issued"
    CODE_WRONG = "verification_code.wrong"
    IDENTITY_VERIFIED = "identity_verified"
    APPROVED = "approved"
    RESUMED = "resumed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    DEADLINE_EXTENDED = "deadline.extended"
    FULFILMENT_STOPPED = "fulfilment.stopped"
    COMPLETED = "completed"
    REAPPLIED_AFTER_RESTORE = "reapplied_after_restore"


def step_done_action(step: StepName) -> str:
    return f"step.{step}"


def step_failed_action(step: StepName) -> str:
    return f"step.{step}.failed"


@dataclass(frozen=True)
class Step:
    name: StepName
    done_at: datetime | None = None
    last_error: str = ""


@dataclass(frozen=True)
class DeadlineExtension:
    extra_working_days: int
    reason: str
    at: datetime
    actor: str  # the caller's subject


@dataclass(frozen=True)
class Explanation:
    rules: str  # points' ExplainMemberRules, as JSON
    transactions: tuple[str, ...]  # one JSON document per transaction named


@dataclass(frozen=True)
class StepFailure:
    """Why fulfilment stopped and waits for an officer: who refused, the status code and
    reason, the fields refused; never a message (it could quote a value)."""

    step: StepName
    service: str
    code: str
    reason: str
    fields: tuple[str, ...]
    retries_exhausted: bool
    at: datetime


@dataclass(frozen=True)
class DataRequest:
    id: str
    member_id: str
    type: RequestType
    channel: Channel | None  # None: privacy's own (a re-erasure after a restore)
    state: State
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
    extensions: tuple[DeadlineExtension, ...] = ()
    purposes: tuple[str, ...] = ()
    transactions: tuple[str, ...] = ()
    correction_fields: tuple[str, ...] = ()
    correction_ciphertext: bytes | None = None
    code_hash: bytes | None = None
    code_expires_at: datetime | None = None
    code_attempts_left: int = 0
    codes_issued: int = 0
    verification_method: VerificationMethod = VerificationMethod.NONE
    attestation_method: str = ""
    attestation_reference: str = ""
    verified_at: datetime | None = None
    approve_request_id: str | None = None
    steps: tuple[Step, ...] = ()
    next_attempt_at: datetime | None = None
    attempts: int = 0
    rejection_reason: str = ""
    deletion_outcome: DeletionOutcome = DeletionOutcome.NONE
    explanation: Explanation | None = None
    closed_at: datetime | None = None
    # why fulfilment stopped and waits for an officer; None while it goes on
    step_failure: StepFailure | None = None
    # the idempotency key of the rejection or cancellation that closed the request
    close_request_id: str | None = None
    close_request_hash: bytes | None = None

    @property
    def name(self) -> str:
        return f"dataRequests/{self.id}"

    @property
    def partly_done(self) -> bool:
        """Whether a step was done: what was done for the member cannot be undone."""
        return any(s.done_at for s in self.steps)

    def pending_steps(self) -> list[StepName]:
        return [s.name for s in self.steps if s.done_at is None]


@dataclass(frozen=True)
class TimelineEvent:
    state: State
    action: str  # a TimelineAction, or a step's (step_done_action, step_failed_action)
    actor: str
    note: str
    created_at: datetime


@dataclass(frozen=True)
class RequestView:
    """A request as a read shows it: its timeline, its export, the time of the read."""

    request: DataRequest
    events: list[TimelineEvent]
    export: Export | None
    now: datetime

    @property
    def overdue(self) -> bool:
        return self.request.state not in FINAL_STATES and self.now >= self.request.due_at


@dataclass(frozen=True)
class ListFilter:
    states: tuple[State, ...] = ()
    types: tuple[RequestType, ...] = ()
    member_id: str = ""
    overdue_only: bool = False  # only open requests past their deadline


@dataclass(frozen=True)
class ListPosition:
    """Where a page of the list (open first, then by deadline and id) resumes."""

    closed: bool
    due_at: datetime
    id: str

    @classmethod
    def after(cls, request: DataRequest) -> ListPosition:
        return cls(request.closed_at is not None, request.due_at, request.id)


def new_request_id() -> str:
    """`dr` + 20 lower-case base32 characters (100 random bits): an AIP-122 resource id."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "dr" + "".join(secrets.choice(alphabet) for _ in range(20))


def illegal_transition(action: Transition, state: State, why: str = "") -> DomainError:
    """FAILED_PRECONDITION `ILLEGAL_TRANSITION`, e.g. "a request in state COMPLETED cannot
    be rejected"; `why` adds the cause when the state alone is not it."""
    message = f"a request in state {state} {REFUSALS[action]}"
    error = failed_precondition(ILLEGAL_TRANSITION, f"{message}: {why}" if why else message)
    error.metadata = {"state": str(state), "action": str(action)}
    return error


def require_allowed(action: Transition, state: State) -> None:
    if state not in ALLOWED_FROM[action]:
        raise illegal_transition(action, state)


def fulfilment_running() -> DomainError:
    return failed_precondition(
        FULFILMENT_RUNNING, "the request is being fulfilled; try again shortly"
    )


def too_many_codes() -> DomainError:
    return failed_precondition(TOO_MANY_CODES, "no more codes for this request: verify another way")


def audit_event(request: DataRequest, action: str, *, actor: str, actor_role: str) -> AuditEvent:
    """The audit event of a change: it names the member by id and the request; a note (a
    reason) stays in the timeline, out of the hash chain's clear fields."""
    return AuditEvent(
        actor=actor,
        actor_role=actor_role,
        action=f"data_request.{action}",
        subject_id=request.member_id,
        purpose=request.type,
        request_id=request.name,
    )
