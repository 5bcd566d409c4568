"""Field encryption for data subjects: data keys per subject, wrapped by the key ring."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.privacy import envelope, store
from services.privacy.audit import AuditEvent
from services.privacy.keyring import IndexKey, KeyRing, KeyRingError
from services.runtime.db import Conn
from services.runtime.errors import (
    DomainError,
    FieldViolation,
    failed_precondition,
    invalid_argument,
    not_found,
)
from services.runtime.identity import Caller

log = logging.getLogger("membership.privacy.crypto")

REWRAP_BATCH = 200


@dataclass(frozen=True)
class RotationResult:
    previous_kek_id: str
    primary_kek_id: str
    data_keys_to_rewrap: int


@dataclass(frozen=True)
class KeyRingReport:
    provider: str
    keys: list[tuple[str, bool, float, int]]  # kek id, primary, created, wrapped data keys
    data_keys_to_rewrap: int
    destroyed_data_keys: int


def _key_destroyed() -> Exception:
    return failed_precondition(
        "SUBJECT_KEY_DESTROYED", "the subject's data key was destroyed (erased subject)"
    )


class FieldCrypto:
    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing, index_key: IndexKey) -> None:
        self._pool = pool
        self._keyring = keyring
        self._index_key = index_key
        self.rewrap_wanted = asyncio.Event()

    def _unwrap(self, row: store.SubjectKeyRow) -> bytes:
        if row.wrapped_key is None or row.kek_id is None:
            raise _key_destroyed()
        kek = self._keyring.get(row.kek_id)
        return envelope.unwrap_data_key(
            kek.key, kek.kek_id, row.subject_id, row.key_version, row.wrapped_key
        )

    async def _data_key(self, conn: Conn, subject_id: str, create: bool) -> tuple[bytes, int]:
        row = await store.get_subject_key(conn, subject_id)
        if row is None and create:
            kek = self._keyring.primary
            wrapped = envelope.wrap_data_key(
                kek.key, kek.kek_id, subject_id, 1, envelope.new_data_key()
            )
            row = await store.insert_subject_key(conn, subject_id, kek.kek_id, wrapped)
            # lost a race with a concurrent first encryption: use the winner's key
            row = row or await store.get_subject_key(conn, subject_id)
        if row is None:
            raise not_found("data key of the subject")
        return self._unwrap(row), row.key_version

    async def encrypt(
        self, subject_id: str, fields: Sequence[tuple[envelope.FieldContext, bytes]]
    ) -> tuple[list[bytes], str]:
        async with self._pool.acquire() as conn:
            data_key, version = await self._data_key(conn, subject_id, create=True)
        key_id = envelope.data_key_id(version)
        return [
            envelope.encrypt_field(data_key, key_id, context, subject_id, plaintext)
            for context, plaintext in fields
        ], key_id

    async def decrypt(
        self,
        caller: Caller,
        subject_id: str,
        fields: Sequence[tuple[envelope.FieldContext, bytes]],
        purpose: str,
        on_behalf_of: str,
        request_id: str,
    ) -> list[bytes]:
        event = AuditEvent(
            actor=caller.subject,
            actor_role=caller.role,
            action="fields.decrypt",
            subject_id=subject_id,
            fields=[f"{c.service}.{c.table}.{c.column}" for c, _ in fields],
            purpose=purpose,
            on_behalf_of=on_behalf_of,
            request_id=request_id,
        )
        async with self._pool.acquire() as conn:
            try:
                data_key, version = await self._data_key(conn, subject_id, create=False)
                plaintexts = self._decrypt_all(data_key, version, subject_id, fields)
            except DomainError:
                # a refused attempt is evidence too (moved ciphertext, shredded key)
                async with conn.transaction():
                    await store.append_audit(conn, replace(event, action="fields.decrypt_refused"))
                raise
            async with conn.transaction():
                await store.append_audit(conn, event)
        return plaintexts

    @staticmethod
    def _decrypt_all(
        data_key: bytes,
        version: int,
        subject_id: str,
        fields: Sequence[tuple[envelope.FieldContext, bytes]],
    ) -> list[bytes]:
        violations, plaintexts = [], []
        for i, (context, ciphertext) in enumerate(fields):
            try:
                parsed = envelope.parse_ciphertext(ciphertext)
                if parsed.key_id != envelope.data_key_id(version):
                    raise envelope.CiphertextError("unknown data key id")
                plaintexts.append(envelope.decrypt_field(data_key, context, subject_id, parsed))
            except envelope.CiphertextError as exc:
                violations.append(FieldViolation(f"fields[{i}].ciphertext", str(exc)))
        if violations:
            raise invalid_argument(violations)
        return plaintexts

    def blind_indexes(self, inputs: Sequence[tuple[str, bytes]]) -> tuple[list[bytes], str]:
        key = self._index_key
        return [envelope.blind_index(key.key, ctx, value) for ctx, value in inputs], key.key_id

    async def destroy_subject_key(
        self, caller: Caller, subject_id: str, request_id: str, reason: str
    ) -> datetime | None:
        async with self._pool.acquire() as conn, conn.transaction():
            destroyed_at = await store.destroy_subject_key(conn, subject_id, request_id, reason)
            await store.append_audit(
                conn,
                AuditEvent(
                    caller.subject,
                    caller.role,
                    "subject_key.destroy",
                    subject_id,
                    purpose=reason,
                    request_id=request_id,
                ),
            )
        return destroyed_at

    async def rotate(self, caller: Caller, request_id: str) -> RotationResult:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", *store.AUDIT_LOCK)
            done = await store.get_rotation(conn, request_id)
            if done is None:
                try:
                    previous, new = self._keyring.rotate()
                except KeyRingError as exc:
                    raise failed_precondition("KEYRING_READ_ONLY", str(exc)) from exc
                done = (previous.kek_id, new.kek_id)
                await store.insert_rotation(conn, request_id, *done)
                await store.append_audit(
                    conn,
                    AuditEvent(
                        caller.subject,
                        caller.role,
                        "kek.rotate",
                        purpose=new.kek_id,
                        request_id=request_id,
                    ),
                )
            by_kek, _ = await store.count_keys_by_kek(conn)
        self.rewrap_wanted.set()
        pending = sum(n for kek_id, n in by_kek.items() if kek_id != self._keyring.primary.kek_id)
        return RotationResult(done[0], done[1], pending)

    async def status(self) -> KeyRingReport:
        async with self._pool.acquire() as conn:
            by_kek, destroyed = await store.count_keys_by_kek(conn)
        primary = self._keyring.primary.kek_id
        keys = [
            (k.kek_id, k.kek_id == primary, k.created_at, by_kek.get(k.kek_id, 0))
            for k in self._keyring.all_keys()
        ]
        pending = sum(n for kek_id, n in by_kek.items() if kek_id != primary)
        return KeyRingReport(self._keyring.provider, keys, pending, destroyed)

    async def rewrap_batch(self) -> int:
        """Re-wraps up to REWRAP_BATCH data keys under the primary key; returns how many."""
        # another replica may have rotated: re-wrapping under a stale primary would move
        # data keys back to the old key
        self._keyring.reload()
        primary = self._keyring.primary
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await store.lock_keys_to_rewrap(conn, primary.kek_id, REWRAP_BATCH)
            rewrapped = [
                (
                    row.subject_id,
                    envelope.wrap_data_key(
                        primary.key,
                        primary.kek_id,
                        row.subject_id,
                        row.key_version,
                        self._unwrap(row),
                    ),
                )
                for row in rows
            ]
            await store.update_wrapped_keys(conn, primary.kek_id, rewrapped)
        return len(rewrapped)
