"""Fulfilment of approved data-subject requests as pure rules: the approval, each step's
result, a failure's record and whether it is retried, the completion. The order of the steps
and their transactions are data_request_fulfilment.py's; what each step does is
data_request_steps.py's.

Every step is idempotent, so a step that ran but was not marked (a crash) runs again safely.
A failure that a later attempt may cure (a service down or slow) is retried with backoff; a
refusal (bad data, a conflict, the member's status), or retries used up, stops the request:
it stays IN_PROGRESS with its `step_failure`, for an officer to reject it with a reason or
approve it again. A DELETION under way retries for as long as it takes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.privacy.domain.data_request_decisions import rejected
from services.privacy.domain.data_requests import (
    STEPS,
    DataRequest,
    DeletionOutcome,
    Explanation,
    RequestType,
    State,
    Step,
    StepFailure,
    StepName,
    Transition,
    require_allowed,
)
from services.privacy.domain.service_calls import ServiceCallError
from services.runtime.errors import Code, DomainError

MAX_ATTEMPTS = 20
TRANSIENT_CODES = frozenset(
    {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.ABORTED, Code.RESOURCE_EXHAUSTED}
)
BACKOFF_MAX = timedelta(minutes=10)
PRIVACY_SERVICE = "privacy"


def backoff(attempts: int) -> timedelta:
    return min(BACKOFF_MAX, timedelta(seconds=2 ** min(attempts, 12)))


# how long an approval's own run has the request before the resumer may take it over
RUN_LEASE = timedelta(seconds=30)


def approved(request: DataRequest, *, key: str, now: datetime) -> DataRequest:
    """IDENTITY_VERIFIED -> IN_PROGRESS with its type's steps; the resumer leaves it to the
    approval's own run unless that run dies."""
    require_allowed(Transition.APPROVE, request.state)
    return replace(
        request,
        state=State.IN_PROGRESS,
        approve_request_id=key,
        steps=tuple(Step(name) for name in STEPS[request.type]),
        next_attempt_at=now + RUN_LEASE,
        updated_at=now,
    )


def resumed(request: DataRequest, now: datetime) -> DataRequest:
    """An IN_PROGRESS request approved again: fulfilment that stopped (a refusal an officer
    dealt with, retries used up) goes on."""
    return replace(
        request,
        attempts=0,
        next_attempt_at=now + RUN_LEASE,
        # the officer saw why it stopped; this run records it again if need be
        step_failure=None,
        updated_at=now,
    )


@dataclass(frozen=True)
class StepOutcome:
    """What a step sets on the request besides marking itself done."""

    deletion_outcome: DeletionOutcome | None = None
    explanation: Explanation | None = None


NOTHING = StepOutcome()


def step_done(
    request: DataRequest, name: StepName, outcome: StepOutcome, now: datetime
) -> DataRequest:
    steps = tuple(
        replace(s, done_at=now, last_error="") if s.name == name else s for s in request.steps
    )
    done = replace(request, steps=steps, attempts=0, step_failure=None, updated_at=now)
    if outcome.deletion_outcome is not None:
        done = replace(done, deletion_outcome=outcome.deletion_outcome)
    if outcome.explanation is not None:
        done = replace(done, explanation=outcome.explanation)
    return done


@dataclass(frozen=True)
class Failure:
    """What a step's failure records: who, the status code and reason, the fields refused;
    never a message (it could quote a value). `transient`: a later attempt may succeed."""

    summary: str
    service: str
    code: str
    transient: bool
    reason: str = ""
    fields: tuple[str, ...] = ()

    def stopped(self, step: StepName, *, retries_exhausted: bool, at: datetime) -> StepFailure:
        """The request's `step_failure` once fulfilment stops here."""
        return StepFailure(
            step=step,
            service=self.service,
            code=self.code,
            reason=self.reason,
            fields=self.fields,
            retries_exhausted=retries_exhausted,
            at=at,
        )

    def stopped_note(self, step: StepName) -> str:
        return f"{step}: {self.summary}; waiting for an officer to reject or approve again"


def classify(exc: Exception) -> Failure:
    if isinstance(exc, ServiceCallError):
        return Failure(exc.summary, exc.service, exc.code, exc.transient, exc.reason, exc.fields)
    if isinstance(exc, DomainError):
        fields = tuple(dict.fromkeys(v.field for v in exc.violations))
        summary = f"{exc.code.name} {exc.reason}"
        transient = exc.code in TRANSIENT_CODES
        return Failure(summary, PRIVACY_SERVICE, exc.code.name, transient, exc.reason, fields)
    # the database or the journal's disk away, a bug: retried, and visible in the logs
    return Failure(type(exc).__name__, PRIVACY_SERVICE, type(exc).__name__, True)


def step_failed(
    request: DataRequest, name: StepName, failure: Failure, now: datetime
) -> DataRequest:
    """The failure recorded on its step; retried after a backoff, or stopped."""
    attempts = request.attempts + 1
    # an erasure under way must finish: it retries for as long as it takes
    retry = failure.transient and (request.type == RequestType.DELETION or attempts < MAX_ATTEMPTS)
    steps = tuple(
        replace(s, last_error=failure.summary) if s.name == name else s for s in request.steps
    )
    stopped = failure.stopped(name, retries_exhausted=failure.transient, at=now)
    return replace(
        request,
        steps=steps,
        attempts=attempts,
        next_attempt_at=now + backoff(attempts) if retry else None,
        step_failure=None if retry else stopped,
        updated_at=now,
    )


def completed(request: DataRequest, now: datetime) -> DataRequest:
    return replace(
        request, state=State.COMPLETED, closed_at=now, next_attempt_at=None, updated_at=now
    )


def rejected_by_erasure(request: DataRequest, erased_by: DataRequest, now: datetime) -> DataRequest:
    """Another open request of an erased member: it can no longer be fulfilled."""
    require_allowed(Transition.REJECT, request.state)  # every open state may be rejected
    reason = f"the member's personal information was erased by {erased_by.name}"
    return rejected(request, reason, key="", fingerprint=b"", now=now)
