"""Field encryption for data subjects: data keys per subject, wrapped by the key ring."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

import asyncpg

from services.privacy.domain import envelope
from services.privacy.domain.audit import AuditEvent
from services.privacy.domain.field_crypto import (
    KEYRING_INCONSISTENT,
    KEYRING_READ_ONLY,
    CryptoAction,
    DataKey,
    Digests,
    Encrypted,
    FieldValue,
    IndexInput,
    KekInfo,
    KeyRingReport,
    RewrapBatch,
    RewrapPass,
    Rewrapped,
    Rotation,
    RotationResult,
    SubjectKey,
    decrypt_all,
    decrypt_event,
    key_destroyed,
    pending_rewrap,
)
from services.privacy.domain.policy import context_not_owned
from services.privacy.keyring import IndexKey, Kek, KeyRing, KeyRingError
from services.privacy.store import audit as audit_store
from services.privacy.store import keys as key_store
from services.runtime.db import Conn
from services.runtime.errors import DomainError, failed_precondition, not_found
from services.runtime.identity import Caller

log = logging.getLogger("membership.privacy.crypto")

REWRAP_BATCH = 200


class FieldCrypto:
    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing, index_key: IndexKey) -> None:
        self._pool = pool
        self._keyring = keyring
        self._index_key = index_key
        self.rewrap_wanted = asyncio.Event()

    def _unwrap(self, row: SubjectKey) -> bytes:
        if row.wrapped_key is None or row.kek_id is None:
            raise key_destroyed()
        kek = self._keyring.get(row.kek_id)
        return envelope.unwrap_data_key(
            kek.key, kek.kek_id, row.subject_id, row.key_version, row.wrapped_key
        )

    async def _data_key(self, conn: Conn, subject_id: str, *, create: bool) -> DataKey:
        row = await key_store.get_subject_key(conn, subject_id)
        if row is None and create:
            kek = self._keyring.primary
            wrapped = envelope.wrap_data_key(
                kek.key, kek.kek_id, subject_id, 1, envelope.new_data_key()
            )
            row = await key_store.insert_subject_key(
                conn, subject_id, kek_id=kek.kek_id, wrapped_key=wrapped
            )
            # lost a race with a concurrent first encryption: use the winner's key
            row = row or await key_store.get_subject_key(conn, subject_id)
        if row is None:
            raise not_found("data key of the subject")
        return DataKey(self._unwrap(row), row.key_version)

    @staticmethod
    def _require_owned(caller: Caller, services: Iterable[str]) -> None:
        error = context_not_owned(caller.role, services)
        if error is not None:
            raise error

    async def encrypt(
        self, caller: Caller, subject_id: str, fields: Sequence[FieldValue]
    ) -> Encrypted:
        """The ciphertexts, and the id of the data key (created on first use)."""
        self._require_owned(caller, [f.context.service for f in fields])
        async with self._pool.acquire() as conn:
            data_key = await self._data_key(conn, subject_id, create=True)
        key_id = envelope.data_key_id(data_key.version)
        ciphertexts = [
            envelope.encrypt_field(data_key.key, key_id, context, subject_id, plaintext)
            for context, plaintext in fields
        ]
        return Encrypted(ciphertexts, key_id)

    async def decrypt(
        self,
        caller: Caller,
        subject_id: str,
        fields: Sequence[FieldValue],
        *,
        purpose: str,
        on_behalf_of: str,
        request_id: str,
    ) -> list[bytes]:
        """The plaintexts; every attempt is audited, a refused one too (it is evidence:
        another service's fields, moved ciphertext, a shredded key)."""
        event = decrypt_event(
            subject_id,
            fields,
            actor=caller.subject,
            actor_role=caller.role,
            purpose=purpose,
            on_behalf_of=on_behalf_of,
            request_id=request_id,
        )
        async with self._pool.acquire() as conn:
            try:
                self._require_owned(caller, [f.context.service for f in fields])
                data_key = await self._data_key(conn, subject_id, create=False)
                plaintexts = decrypt_all(data_key, subject_id, fields)
            except DomainError:
                refused = replace(event, action=CryptoAction.DECRYPT_REFUSED)
                async with conn.transaction():
                    await audit_store.append_audit(conn, refused)
                raise
            async with conn.transaction():
                await audit_store.append_audit(conn, event)
        return plaintexts

    def blind_indexes(self, caller: Caller, inputs: Sequence[IndexInput]) -> Digests:
        """Index contexts are `<service>.<table>.<column>`-like: a service indexes its own."""
        self._require_owned(caller, [i.context.partition(".")[0] for i in inputs])
        key = self._index_key
        digests = [envelope.blind_index(key.key, ctx, value) for ctx, value in inputs]
        return Digests(digests, key.key_id)

    async def destroy_subject_key(
        self, caller: Caller, subject_id: str, *, request_id: str, reason: str
    ) -> datetime | None:
        """Returns when the subject's data key was destroyed; None if they never had one
        (a tombstone then keeps one from being created later)."""
        event = AuditEvent(
            caller.subject,
            caller.role,
            CryptoAction.DESTROY_SUBJECT_KEY,
            subject_id,
            purpose=reason,
            request_id=request_id,
        )
        async with self._pool.acquire() as conn, conn.transaction():
            destruction = await key_store.destroy_subject_key(
                conn, subject_id, request_id=request_id, reason=reason
            )
            await audit_store.append_audit(conn, event)
        return destruction.destroyed_at if destruction.had_key else None

    async def rotate(self, caller: Caller, request_id: str) -> RotationResult:
        """Adds a key to the ring, records the rotation, then makes the key primary; a repeat
        of the request completes a rotation that stopped after its record was written."""
        async with self._pool.acquire() as conn, key_store.key_ring_lock(conn):
            done = await key_store.get_rotation(conn, request_id)
            if done is None:
                done = await self._record_rotation(conn, caller, request_id)
            self._make_primary(done)
            counts = await key_store.count_keys_by_kek(conn)
        self.rewrap_wanted.set()
        pending = pending_rewrap(counts, self._keyring.primary.kek_id)
        return RotationResult(done.previous_kek_id, done.primary_kek_id, pending)

    async def _record_rotation(self, conn: Conn, caller: Caller, request_id: str) -> Rotation:
        # the new key reaches the file first, as a non-primary key: if the database part
        # fails, nothing wraps with it and no rotation happened
        try:
            new = self._keyring.add_key()
        except KeyRingError as exc:
            raise failed_precondition(KEYRING_READ_ONLY, str(exc)) from exc
        # add_key re-read the file
        rotation = Rotation(self._keyring.primary.kek_id, new.kek_id)
        event = AuditEvent(
            caller.subject,
            caller.role,
            CryptoAction.ROTATE,
            purpose=new.kek_id,
            request_id=request_id,
        )
        async with conn.transaction():
            await key_store.insert_rotation(conn, request_id, rotation)
            await audit_store.append_audit(conn, event)
        return rotation

    def _make_primary(self, rotation: Rotation) -> None:
        """Only if the ring's primary is still the recorded previous key: a later rotation
        (or an operator) may have moved it on, and that must not be undone."""
        try:
            self._keyring.make_primary(
                rotation.primary_kek_id, only_if_primary=rotation.previous_kek_id
            )
        except KeyRingError as exc:
            raise failed_precondition(KEYRING_INCONSISTENT, str(exc)) from exc

    async def status(self) -> KeyRingReport:
        async with self._pool.acquire() as conn:
            counts = await key_store.count_keys_by_kek(conn)
        primary = self._keyring.primary.kek_id
        keys = [
            KekInfo(k.kek_id, k.kek_id == primary, k.created_at, counts.by_kek.get(k.kek_id, 0))
            for k in self._keyring.all_keys()
        ]
        pending = pending_rewrap(counts, primary)
        return KeyRingReport(self._keyring.provider, keys, pending, counts.destroyed)

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
            rows = await key_store.lock_keys_to_rewrap(
                conn,
                primary_kek_id=primary.kek_id,
                after_subject_id=after_subject_id,
                limit=REWRAP_BATCH,
            )
            rewrapped, failures = self._rewrap_rows(primary, rows)
            await key_store.update_wrapped_keys(conn, primary.kek_id, rewrapped)
        return RewrapBatch(len(rewrapped), failures, rows[-1].subject_id if rows else None)

    def _rewrap_rows(
        self, primary: Kek, rows: Sequence[SubjectKey]
    ) -> tuple[list[Rewrapped], Counter[str]]:
        rewrapped: list[Rewrapped] = []
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
            rewrapped.append(Rewrapped(row.subject_id, wrapped))
        return rewrapped, failures
