"""Consent of members to processing purposes: the records, the state they add up to, and
the refusals. Pure rules (consent.py runs them in transactions).

The current state of a purpose is its latest record. A consent is stale when a material
notice version was published after the one the member consented to; processing that needs
consent is then not allowed until the member consents to the current notice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from services.privacy.domain.audit import AuditEvent
from services.privacy.domain.purpose_catalogue import Purpose
from services.runtime.errors import Code, DomainError, bad_field, failed_precondition

MEMBER_UNKNOWN = "MEMBER_UNKNOWN"
MEMBER_ERASED = "MEMBER_ERASED"
NOTICE_VERSION_STALE = "NOTICE_VERSION_STALE"
NECESSARY_PURPOSE = "NECESSARY_PURPOSE"
# the purpose whose withdrawal pauses settling the member's payments in points (sensitive
# personal information, PIPL Art. 29): points learns it through privacy's outbox
PAYMENT_RECORDS = "payment_records"


class Channel(StrEnum):
    """Where the member acted (consent records, data requests); the stored values."""

    APP = "app"
    WEB = "web"
    COUNTER = "counter"
    PHONE = "phone"


CHANNELS = tuple(Channel)


class ConsentAction(StrEnum):
    GRANT = "grant"  # the values privacy.consent_records.action holds
    WITHDRAW = "withdraw"


class Status(StrEnum):
    GRANTED = "GRANTED"
    WITHDRAWN = "WITHDRAWN"
    NOT_GIVEN = "NOT_GIVEN"


@dataclass(frozen=True)
class Grant:
    purpose_code: str
    notice_version: int  # the version the member was shown


class ConsentItem(NamedTuple):
    """One purpose of a change, with the notice version it records."""

    purpose_code: str
    notice_version: int


@dataclass(frozen=True)
class ConsentRecord:
    purpose_code: str
    action: ConsentAction
    notice_version: int
    channel: Channel
    recorded_at: datetime
    request_id: str
    request_hash: bytes


@dataclass(frozen=True)
class ConsentTally:
    """Members whose latest record for a purpose has this action and notice version."""

    purpose_code: str
    action: ConsentAction
    notice_version: int
    members: int


@dataclass(frozen=True)
class ConsentState:
    purpose: Purpose
    status: Status
    notice_version: int  # granted: the version consented to; withdrawn: the one in force
    channel: Channel | None  # None: never given
    update_time: datetime | None

    @property
    def stale(self) -> bool:
        return self.status is Status.GRANTED and self.purpose.is_stale(self.notice_version)

    @property
    def allowed(self) -> bool:
        return self.status is Status.GRANTED and not self.stale


def state_of(purpose: Purpose, latest: ConsentRecord | None) -> ConsentState:
    if latest is None:
        return ConsentState(purpose, Status.NOT_GIVEN, 0, None, None)
    status = Status.GRANTED if latest.action == ConsentAction.GRANT else Status.WITHDRAWN
    return ConsentState(purpose, status, latest.notice_version, latest.channel, latest.recorded_at)


def request_hash(action: ConsentAction, items: Sequence[ConsentItem], channel: Channel) -> bytes:
    """Fingerprint of a consent change; it holds no personal information, so plain SHA-256."""
    canonical = json.dumps(
        {"action": action, "items": [list(i) for i in items], "channel": channel},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).digest()


def records_of(
    action: ConsentAction,
    items: Sequence[ConsentItem],
    *,
    channel: Channel,
    request_id: str,
    digest: bytes,
    at: datetime,
) -> list[ConsentRecord]:
    return [
        ConsentRecord(code, action, version, channel, at, request_id, digest)
        for code, version in items
    ]


def change_event(
    member_id: str, records: Sequence[ConsentRecord], *, actor: str, actor_role: str
) -> AuditEvent:
    """The audit event of a consent change (one action, one channel, one request)."""
    first = records[0]
    return AuditEvent(
        actor=actor,
        actor_role=actor_role,
        action=f"consent.{first.action}",
        subject_id=member_id,
        # purpose codes with the notice version: ids only, no personal information
        fields=[f"{r.purpose_code}@{r.notice_version}" for r in records],
        purpose=f"channel={first.channel}",
        request_id=first.request_id,
    )


def require_channel(channel: str | None) -> Channel:
    if channel is None or channel not in CHANNELS:
        raise bad_field("channel", f"one of {', '.join(CHANNELS)}")
    return Channel(channel)


def member_unknown() -> DomainError:
    return DomainError(Code.NOT_FOUND, MEMBER_UNKNOWN, "privacy holds no data key for the member")


def member_erased() -> DomainError:
    return failed_precondition(MEMBER_ERASED, "the member was erased (data key destroyed)")


def notice_version_stale(index: int) -> DomainError:
    error = failed_precondition(
        NOTICE_VERSION_STALE, "the notice version shown is not the purpose's current one"
    )
    error.metadata = {"grant_index": str(index)}
    return error


def necessary_purpose() -> DomainError:
    return failed_precondition(
        NECESSARY_PURPOSE,
        "a purpose necessary for the service cannot be withdrawn: close the account instead",
    )
