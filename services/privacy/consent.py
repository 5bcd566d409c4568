"""Consent of members to processing purposes: append-only records, current state, checks
(the rules are domain/consent.py). A change writes its records, its audit event and the
processing pause points must learn of in one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from services.privacy.domain.consent import (
    PAYMENT_RECORDS,
    ConsentAction,
    ConsentItem,
    ConsentRecord,
    ConsentState,
    Grant,
    change_event,
    member_erased,
    member_unknown,
    necessary_purpose,
    notice_version_stale,
    records_of,
    request_hash,
    require_channel,
    state_of,
)
from services.privacy.domain.processing import PauseCause
from services.privacy.domain.purpose_catalogue import Catalogue, Purpose
from services.privacy.store import audit as audit_store
from services.privacy.store import consent as consent_store
from services.privacy.store import keys as key_store
from services.privacy.store import outbox as outbox_store
from services.runtime.db import Conn
from services.runtime.errors import bad_field, idempotency_key_reused
from services.runtime.identity import Caller


async def require_member(conn: Conn, member_id: str) -> None:
    """Privacy knows a member when it holds (or held) a data key for them."""
    key = await key_store.get_subject_key(conn, member_id)
    if key is None:
        raise member_unknown()
    if key.destroyed_at is not None:
        raise member_erased()


class Consents:
    def __init__(self, pool: asyncpg.Pool, catalogue: Catalogue) -> None:
        self._pool = pool
        self.catalogue = catalogue

    def purpose(self, code: str, *, field_path: str = "purpose") -> Purpose:
        found = self.catalogue.get(code)
        if found is None:
            raise bad_field(field_path, "unknown purpose")
        return found

    async def grant(
        self,
        caller: Caller,
        member_id: str,
        grants: Sequence[Grant],
        *,
        channel: str | None,
        request_id: str,
    ) -> list[ConsentState]:
        checked = require_channel(channel)
        purposes = [self.purpose(g.purpose_code) for g in grants]
        items = [ConsentItem(g.purpose_code, g.notice_version) for g in grants]
        digest = request_hash(ConsentAction.GRANT, items, checked)
        async with self._pool.acquire() as conn, conn.transaction():
            done = await self._locked_replay(conn, member_id, request_id=request_id, digest=digest)
            if done is not None:
                return done
            for i, (purpose, g) in enumerate(zip(purposes, grants, strict=True)):
                # consent counts only for the notice the member was actually shown
                if g.notice_version != purpose.current_version:
                    raise notice_version_stale(i)
            records = records_of(
                ConsentAction.GRANT,
                items,
                channel=checked,
                request_id=request_id,
                digest=digest,
                at=datetime.now(UTC),
            )
            await self._write(conn, caller, member_id, records)
        return [state_of(p, r) for p, r in zip(purposes, records, strict=True)]

    async def withdraw(
        self,
        caller: Caller,
        member_id: str,
        codes: Sequence[str],
        *,
        channel: str | None,
        request_id: str,
    ) -> list[ConsentState]:
        checked = require_channel(channel)
        purposes = [self.purpose(code) for code in codes]
        if any(p.necessary for p in purposes):
            raise necessary_purpose()
        # the notice in force when withdrawn, so every record names a published notice
        items = [ConsentItem(p.code, p.current_version) for p in purposes]
        unversioned = [ConsentItem(p.code, 0) for p in purposes]
        digest = request_hash(ConsentAction.WITHDRAW, unversioned, checked)
        async with self._pool.acquire() as conn, conn.transaction():
            done = await self._locked_replay(conn, member_id, request_id=request_id, digest=digest)
            if done is not None:
                return done
            records = records_of(
                ConsentAction.WITHDRAW,
                items,
                channel=checked,
                request_id=request_id,
                digest=digest,
                at=datetime.now(UTC),
            )
            await self._write(conn, caller, member_id, records)
        return [state_of(p, r) for p, r in zip(purposes, records, strict=True)]

    async def states(self, member_id: str) -> list[ConsentState]:
        """Every purpose of the catalogue, in catalogue order."""
        codes = list(self.catalogue.purposes)
        async with self._pool.acquire() as conn:
            await require_member(conn, member_id)
            latest = {
                r.purpose_code: r
                for r in await consent_store.latest_records(conn, member_id, codes)
            }
        return [state_of(p, latest.get(p.code)) for p in self.catalogue.purposes.values()]

    async def check(self, member_id: str, code: str) -> ConsentState:
        purpose = self.purpose(code)
        async with self._pool.acquire() as conn:
            await require_member(conn, member_id)
            latest = await consent_store.latest_records(conn, member_id, [code])
        return state_of(purpose, latest[0] if latest else None)

    async def history(self, member_id: str, limit: int) -> list[ConsentRecord]:
        """The member's consent records, oldest first (at most `limit`)."""
        async with self._pool.acquire() as conn:
            return await consent_store.history(conn, member_id, limit)

    async def _locked_replay(
        self, conn: Conn, member_id: str, *, request_id: str, digest: bytes
    ) -> list[ConsentState] | None:
        """In the change's transaction: the member known and locked, and the first result if
        the request repeats one (the member's lock makes the check and the insert one step)."""
        await require_member(conn, member_id)
        await consent_store.lock_member(conn, member_id)
        done = await consent_store.request_records(conn, member_id, request_id=request_id)
        return self._replay(done, digest) if done else None

    def _replay(self, done: Sequence[ConsentRecord], digest: bytes) -> list[ConsentState]:
        """The first result of a repeated request (states as that request left them)."""
        if any(r.request_hash != digest for r in done):
            raise idempotency_key_reused()
        return [state_of(self.purpose(r.purpose_code), r) for r in done]

    @staticmethod
    async def _write(
        conn: Conn, caller: Caller, member_id: str, records: Sequence[ConsentRecord]
    ) -> None:
        """The records, their audit event and (for `payment_records`) the processing pause
        points must learn of, in the caller's transaction."""
        await consent_store.insert_records(conn, member_id, records)
        if any(r.purpose_code == PAYMENT_RECORDS for r in records):
            paused = records[0].action == ConsentAction.WITHDRAW
            await outbox_store.enqueue_pause(
                conn, member_id, PauseCause.CONSENT_WITHDRAWN, paused=paused
            )
        await audit_store.append_audit(
            conn, change_event(member_id, records, actor=caller.subject, actor_role=caller.role)
        )
