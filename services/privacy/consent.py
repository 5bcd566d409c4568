"""Consent of members to processing purposes: append-only records, current state, checks.

The current state of a purpose is its latest record. A consent is stale when a material
notice version was published after the one the member consented to; processing that needs
consent is then not allowed until the member consents to the current notice.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.privacy import store, store_consent, store_outbox
from services.privacy.audit import AuditEvent
from services.privacy.domain.purpose_catalogue import Catalogue, Purpose
from services.privacy.store_consent import ConsentRecord
from services.runtime.db import Conn
from services.runtime.errors import (
    Code,
    DomainError,
    bad_field,
    failed_precondition,
    idempotency_key_reused,
)
from services.runtime.identity import Caller

CHANNELS = ("app", "web", "counter", "phone")
GRANT = "grant"
WITHDRAW = "withdraw"
# the purpose whose withdrawal pauses settling the member's payments in points (sensitive
# personal information, PIPL Art. 29): points learns it through privacy's outbox
PAYMENT_RECORDS = "payment_records"
CONSENT_WITHDRAWN = "CONSENT_WITHDRAWN"


class Status(enum.Enum):
    GRANTED = "GRANTED"
    WITHDRAWN = "WITHDRAWN"
    NOT_GIVEN = "NOT_GIVEN"


@dataclass(frozen=True)
class Grant:
    purpose_code: str
    notice_version: int  # the version the member was shown


@dataclass(frozen=True)
class ConsentState:
    purpose: Purpose
    status: Status
    notice_version: int  # granted: the version consented to; withdrawn: the one in force
    channel: str
    update_time: datetime | None

    @property
    def stale(self) -> bool:
        return self.status is Status.GRANTED and self.purpose.is_stale(self.notice_version)

    @property
    def allowed(self) -> bool:
        return self.status is Status.GRANTED and not self.stale


def state_of(purpose: Purpose, latest: ConsentRecord | None) -> ConsentState:
    if latest is None:
        return ConsentState(purpose, Status.NOT_GIVEN, 0, "", None)
    status = Status.GRANTED if latest.action == GRANT else Status.WITHDRAWN
    return ConsentState(purpose, status, latest.notice_version, latest.channel, latest.recorded_at)


def request_hash(action: str, items: Sequence[tuple[str, int]], channel: str) -> bytes:
    """Fingerprint of a consent change; it holds no personal information, so plain SHA-256."""
    canonical = json.dumps(
        {"action": action, "items": [list(i) for i in items], "channel": channel},
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).digest()


def member_unknown() -> DomainError:
    return DomainError(Code.NOT_FOUND, "MEMBER_UNKNOWN", "privacy holds no data key for the member")


def member_erased() -> DomainError:
    return failed_precondition("MEMBER_ERASED", "the member was erased (data key destroyed)")


def notice_version_stale(index: int) -> DomainError:
    error = failed_precondition(
        "NOTICE_VERSION_STALE", "the notice version shown is not the purpose's current one"
    )
    error.metadata = {"grant_index": str(index)}
    return error


def necessary_purpose() -> DomainError:
    return failed_precondition(
        "NECESSARY_PURPOSE",
        "a purpose necessary for the service cannot be withdrawn: close the account instead",
    )


def _require_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise bad_field("channel", f"one of {', '.join(CHANNELS)}")


async def require_member(conn: Conn, member_id: str) -> None:
    """Privacy knows a member when it holds (or held) a data key for them."""
    key = await store.get_subject_key(conn, member_id)
    if key is None:
        raise member_unknown()
    if key.destroyed_at is not None:
        raise member_erased()


class Consents:
    def __init__(self, pool: asyncpg.Pool, catalogue: Catalogue) -> None:
        self._pool = pool
        self.catalogue = catalogue

    def purpose(self, code: str, field_path: str = "purpose") -> Purpose:
        found = self.catalogue.get(code)
        if found is None:
            raise bad_field(field_path, "unknown purpose")
        return found

    async def grant(
        self, caller: Caller, member_id: str, grants: Sequence[Grant], channel: str, request_id: str
    ) -> list[ConsentState]:
        _require_channel(channel)
        purposes = [self.purpose(g.purpose_code) for g in grants]
        items = [(g.purpose_code, g.notice_version) for g in grants]
        digest = request_hash(GRANT, items, channel)
        async with self._pool.acquire() as conn, conn.transaction():
            await require_member(conn, member_id)
            await store_consent.lock_member(conn, member_id)
            done = await store_consent.request_records(conn, member_id, request_id)
            if done:
                return self._replay(done, digest)
            for i, (purpose, g) in enumerate(zip(purposes, grants, strict=True)):
                # consent counts only for the notice the member was actually shown
                if g.notice_version != purpose.current_version:
                    raise notice_version_stale(i)
            records = self._records(GRANT, items, channel, request_id, digest)
            await self._write(conn, caller, member_id, GRANT, records)
        return [state_of(p, r) for p, r in zip(purposes, records, strict=True)]

    async def withdraw(
        self, caller: Caller, member_id: str, codes: Sequence[str], channel: str, request_id: str
    ) -> list[ConsentState]:
        _require_channel(channel)
        purposes = [self.purpose(code) for code in codes]
        if any(p.necessary for p in purposes):
            raise necessary_purpose()
        # the notice in force when withdrawn, so every record names a published notice
        items = [(p.code, p.current_version) for p in purposes]
        digest = request_hash(WITHDRAW, [(p.code, 0) for p in purposes], channel)
        async with self._pool.acquire() as conn, conn.transaction():
            await require_member(conn, member_id)
            await store_consent.lock_member(conn, member_id)
            done = await store_consent.request_records(conn, member_id, request_id)
            if done:
                return self._replay(done, digest)
            records = self._records(WITHDRAW, items, channel, request_id, digest)
            await self._write(conn, caller, member_id, WITHDRAW, records)
        return [state_of(p, r) for p, r in zip(purposes, records, strict=True)]

    async def states(self, member_id: str) -> list[ConsentState]:
        """Every purpose of the catalogue, in catalogue order."""
        codes = list(self.catalogue.purposes)
        async with self._pool.acquire() as conn:
            await require_member(conn, member_id)
            latest = {
                r.purpose_code: r
                for r in await store_consent.latest_records(conn, member_id, codes)
            }
        return [state_of(p, latest.get(p.code)) for p in self.catalogue.purposes.values()]

    async def check(self, member_id: str, code: str) -> ConsentState:
        purpose = self.purpose(code)
        async with self._pool.acquire() as conn:
            await require_member(conn, member_id)
            latest = await store_consent.latest_records(conn, member_id, [code])
        return state_of(purpose, latest[0] if latest else None)

    def _replay(self, done: Sequence[ConsentRecord], digest: bytes) -> list[ConsentState]:
        """The first result of a repeated request (states as that request left them)."""
        if any(r.request_hash != digest for r in done):
            raise idempotency_key_reused()
        return [state_of(self.purpose(r.purpose_code), r) for r in done]

    @staticmethod
    def _records(
        action: str,
        items: Sequence[tuple[str, int]],
        channel: str,
        request_id: str,
        digest: bytes,
    ) -> list[ConsentRecord]:
        now = datetime.now(UTC)
        return [
            ConsentRecord(code, action, version, channel, now, request_id, digest)
            for code, version in items
        ]

    @staticmethod
    async def _write(
        conn: Conn, caller: Caller, member_id: str, action: str, records: Sequence[ConsentRecord]
    ) -> None:
        """The records, their audit event and (for `payment_records`) the processing pause
        points must learn of, in the caller's transaction."""
        await store_consent.insert_records(conn, member_id, records)
        if any(r.purpose_code == PAYMENT_RECORDS for r in records):
            await store_outbox.enqueue_pause(
                conn, member_id, CONSENT_WITHDRAWN, paused=action == WITHDRAW
            )
        await store.append_audit(
            conn,
            AuditEvent(
                actor=caller.subject,
                actor_role=caller.role,
                action=f"consent.{action}",
                subject_id=member_id,
                # purpose codes with the notice version: ids only, no personal information
                fields=[f"{r.purpose_code}@{r.notice_version}" for r in records],
                purpose=f"channel={records[0].channel}",
                request_id=records[0].request_id,
            ),
        )
