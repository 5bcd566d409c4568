"""Field encryption's value types and rules: subject data keys, key-ring rotations and
re-wrapping passes, the audit events of decryption and key destruction. Pure: the envelope
format is domain/envelope.py, the SQL store/keys.py, the key ring's files keyring.py."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from services.privacy.domain import envelope
from services.privacy.domain.audit import AuditEvent
from services.runtime.errors import (
    DomainError,
    FieldViolation,
    failed_precondition,
    invalid_argument,
)

SUBJECT_KEY_DESTROYED = "SUBJECT_KEY_DESTROYED"
KEYRING_READ_ONLY = "KEYRING_READ_ONLY"
KEYRING_INCONSISTENT = "KEYRING_INCONSISTENT"


class CryptoAction(StrEnum):
    """Audit actions of field encryption (the values are in the hash chain)."""

    DECRYPT = "fields.decrypt"
    # a refused attempt is evidence too (another service's fields, moved ciphertext, a
    # shredded key)
    DECRYPT_REFUSED = "fields.decrypt_refused"
    DESTROY_SUBJECT_KEY = "subject_key.destroy"
    ROTATE = "kek.rotate"


class FieldValue(NamedTuple):
    """A plaintext or ciphertext of one column of a subject's row."""

    context: envelope.FieldContext
    value: bytes


class Encrypted(NamedTuple):
    ciphertexts: list[bytes]
    data_key_id: str


class Digests(NamedTuple):
    digests: list[bytes]
    index_key_id: str


class DataKey(NamedTuple):
    """A subject's data key, unwrapped, and its version."""

    key: bytes
    version: int


class IndexInput(NamedTuple):
    """A normalised value to index, in its `<service>.<table>.<column>`-like context."""

    context: str
    value: bytes


@dataclass(frozen=True)
class SubjectKey:
    """A subject's data key as stored: wrapped by a key-encryption key, or destroyed (a
    tombstone of version 0 for a subject erased before they had one)."""

    subject_id: str
    key_version: int
    kek_id: str | None
    wrapped_key: bytes | None
    destroyed_at: datetime | None


class Destruction(NamedTuple):
    destroyed_at: datetime  # of the first destruction
    had_key: bool


class Rotation(NamedTuple):
    previous_kek_id: str
    primary_kek_id: str


class KeyCounts(NamedTuple):
    by_kek: dict[str, int]  # wrapped data keys per key-encryption key
    destroyed: int


class Rewrapped(NamedTuple):
    subject_id: str
    wrapped_key: bytes


@dataclass(frozen=True)
class RotationResult:
    previous_kek_id: str
    primary_kek_id: str
    data_keys_to_rewrap: int


class KekInfo(NamedTuple):
    kek_id: str
    primary: bool
    created_at: float  # seconds since the epoch
    wrapped_data_keys: int


@dataclass(frozen=True)
class KeyRingReport:
    provider: str
    keys: list[KekInfo]
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


def key_destroyed() -> DomainError:
    return failed_precondition(
        SUBJECT_KEY_DESTROYED, "the subject's data key was destroyed (erased subject)"
    )


def pending_rewrap(counts: KeyCounts, primary_kek_id: str) -> int:
    """Data keys still wrapped by another key than the primary."""
    return sum(n for kek_id, n in counts.by_kek.items() if kek_id != primary_kek_id)


def decrypt_event(
    subject_id: str,
    fields: Sequence[FieldValue],
    *,
    actor: str,
    actor_role: str,
    purpose: str,
    on_behalf_of: str,
    request_id: str,
) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        actor_role=actor_role,
        action=CryptoAction.DECRYPT,
        subject_id=subject_id,
        fields=[f"{c.service}.{c.table}.{c.column}" for c, _ in fields],
        purpose=purpose,
        on_behalf_of=on_behalf_of,
        request_id=request_id,
    )


def decrypt_all(data_key: DataKey, subject_id: str, fields: Sequence[FieldValue]) -> list[bytes]:
    """The plaintexts; INVALID_ARGUMENT naming every ciphertext that does not decrypt under
    the subject's data key in its context."""
    violations, plaintexts = [], []
    for i, (context, ciphertext) in enumerate(fields):
        try:
            parsed = envelope.parse_ciphertext(ciphertext)
            if parsed.key_id != envelope.data_key_id(data_key.version):
                raise envelope.CiphertextError("unknown data key id")
            plaintexts.append(envelope.decrypt_field(data_key.key, context, subject_id, parsed))
        except envelope.CiphertextError as exc:
            violations.append(FieldViolation(f"fields[{i}].ciphertext", str(exc)))
    if violations:
        raise invalid_argument(violations)
    return plaintexts
