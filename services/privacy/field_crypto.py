"""Field encryption for data subjects: data keys per subject, wrapped by the key ring."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from services.privacy import envelope, store
from services.privacy.audit import AuditEvent
from services.privacy.keyring import IndexKey, Kek, KeyRing, KeyRingError
from services.privacy.policy import context_not_owned
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


@dataclass(frozen=True)
class RewrapBatch:
    moved: int
    failures: Counter[str]  # error type -> data keys that could not be unwrapped
    last_subject_id: str | None  # the cursor for the next batch; None: nothing was left


@dataclass(frozen=True)
class RewrapPass:
    moved: int
    failures: Counter[str]

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


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

    @staticmethod
    def _require_owned(caller: Caller, contexts: Sequence[envelope.FieldContext]) -> None:
        error = context_not_owned(caller.role, (c.service for c in contexts))
        if error is not None:
            raise error

    async def encrypt(
        self,
        caller: Caller,
        subject_id: str,
        fields: Sequence[tuple[envelope.FieldContext, bytes]],
    ) -> tuple[list[bytes], str]:
        self._require_owned(caller, [c for c, _ in fields])
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
                self._require_owned(caller, [c for c, _ in fields])
                data_key, version = await self._data_key(conn, subject_id, create=False)
                plaintexts = self._decrypt_all(data_key, version, subject_id, fields)
            except DomainError:
                # a refused attempt is evidence too (another service's fields, moved
                # ciphertext, shredded key)
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

    def blind_indexes(
        self, caller: Caller, inputs: Sequence[tuple[str, bytes]]
    ) -> tuple[list[bytes], str]:
        """Index contexts are `<service>.<table>.<column>`-like: a service indexes its own."""
        error = context_not_owned(caller.role, (ctx.partition(".")[0] for ctx, _ in inputs))
        if error is not None:
            raise error
        key = self._index_key
        return [envelope.blind_index(key.key, ctx, value) for ctx, value in inputs], key.key_id

    async def destroy_subject_key(
        self, caller: Caller, subject_id: str, request_id: str, reason: str
    ) -> datetime | None:
        """Returns when the subject's data key was destroyed; None if they never had one
        (a tombstone then keeps one from being created later)."""
        async with self._pool.acquire() as conn, conn.transaction():
            destroyed_at, had_key = await store.destroy_subject_key(
                conn, subject_id, request_id, reason
            )
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
        return destroyed_at if had_key else None

    async def rotate(self, caller: Caller, request_id: str) -> RotationResult:
        """Adds a key to the ring, records the rotation, then makes the key primary; a repeat
        of the request completes a rotation that stopped after its record was written."""
        async with self._pool.acquire() as conn, store.key_ring_lock(conn):
            done = await store.get_rotation(conn, request_id)
            if done is None:
                done = await self._record_rotation(conn, caller, request_id)
            self._make_primary(*done)
            by_kek, _ = await store.count_keys_by_kek(conn)
        self.rewrap_wanted.set()
        pending = sum(n for kek_id, n in by_kek.items() if kek_id != self._keyring.primary.kek_id)
        return RotationResult(done[0], done[1], pending)

    async def _record_rotation(
        self, conn: Conn, caller: Caller, request_id: str
    ) -> tuple[str, str]:
        # the new key reaches the file first, as a non-primary key: if the database part
        # fails, nothing wraps with it and no rotation happened
        try:
            new = self._keyring.add_key()
        except KeyRingError as exc:
            raise failed_precondition("KEYRING_READ_ONLY", str(exc)) from exc
        previous = self._keyring.primary.kek_id  # add_key re-read the file
        async with conn.transaction():
            await store.insert_rotation(conn, request_id, previous, new.kek_id)
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
        return previous, new.kek_id

    def _make_primary(self, previous_kek_id: str, new_kek_id: str) -> None:
        """Only if the ring's primary is still the recorded previous key: a later rotation
        (or an operator) may have moved it on, and that must not be undone."""
        try:
            self._keyring.make_primary(new_kek_id, only_if_primary=previous_kek_id)
        except KeyRingError as exc:
            raise failed_precondition("KEYRING_INCONSISTENT", str(exc)) from exc

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

    async def rewrap_pass(self) -> RewrapPass:
        """Re-wraps every data key not under the primary key, walking in subject order with
        a cursor, so keys that cannot be unwrapped are skipped and the pass always ends."""
        moved, failures, after = 0, Counter[str](), ""
        while True:
            batch = await self.rewrap_batch(after)
            if batch.last_subject_id is None:
                return RewrapPass(moved, failures)
            moved += batch.moved
            failures.update(batch.failures)
            after = batch.last_subject_id

    async def rewrap_batch(self, after_subject_id: str = "") -> RewrapBatch:
        """Re-wraps up to REWRAP_BATCH data keys after the cursor under the primary key."""
        # another replica may have rotated: re-wrapping under a stale primary would move
        # data keys back to the old key
        self._keyring.reload()
        primary = self._keyring.primary
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await store.lock_keys_to_rewrap(
                conn, primary.kek_id, after_subject_id, REWRAP_BATCH
            )
            rewrapped, failures = self._rewrap_rows(primary, rows)
            await store.update_wrapped_keys(conn, primary.kek_id, rewrapped)
        return RewrapBatch(len(rewrapped), failures, rows[-1].subject_id if rows else None)

    def _rewrap_rows(
        self, primary: Kek, rows: Sequence[store.SubjectKeyRow]
    ) -> tuple[list[tuple[str, bytes]], Counter[str]]:
        rewrapped: list[tuple[str, bytes]] = []
        failures = Counter[str]()
        for row in rows:
            try:
                data_key = self._unwrap(row)
            except (KeyRingError, envelope.CiphertextError) as exc:
                # one bad data key (unknown or lost KEK, corrupt wrap) must not hold back
                # the others; it stays under its old key and counted as still to re-wrap
                failures[type(exc).__name__] += 1
                continue
            wrapped = envelope.wrap_data_key(
                primary.key, primary.kek_id, row.subject_id, row.key_version, data_key
            )
            rewrapped.append((row.subject_id, wrapped))
        return rewrapped, failures
