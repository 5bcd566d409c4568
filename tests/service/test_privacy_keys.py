"""Key lifecycle of the privacy service under failure: erasure before any key exists, fields
of another service, data keys that cannot be re-wrapped, and rotations that stop halfway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from membership.privacy.v1 import field_crypto_pb2 as pb

from services.privacy import field_crypto, keyring
from services.privacy.server import PrivacyComponent
from services.privacy.store import keys as key_store
from services.runtime.identity import Caller
from tests.support.privacy import (
    FAILED_PRECONDITION,
    PHONE,
    accounts_role,
    admin_role,
    audit_entries,
    context,
    encrypt,
    kek_of,
    privacy_role,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED
ADMIN = Caller("admin:root", "admin", frozenset(), "t-1")
REWRAP_WAIT_S = 10.0


def component(suite: Suite) -> PrivacyComponent:
    running = suite.privacy_service.component
    assert isinstance(running, PrivacyComponent)
    return running


def ring_on_disk(suite: Suite) -> keyring.KeyRing:
    return keyring.load_keyring(suite.keys_dir)


async def rotation_audits(db: asyncpg.Connection) -> int:
    return len([e for e in await audit_entries(db) if e.event.action == "kek.rotate"])


# --- erasure before any key ------------------------------------------------------------------


async def test_destroying_a_key_that_never_existed_keeps_one_from_being_created(
    suite: Suite, db: asyncpg.Connection
) -> None:
    request = pb.DestroySubjectKeyRequest(subject_id="m-never", request_id="e-1", reason="dsr-1")
    response = await suite.privacy.DestroySubjectKey(request, metadata=privacy_role(suite))
    assert not response.destroyed  # there was no key to destroy
    assert not response.HasField("destroy_time")

    await expect_error(
        suite.privacy.EncryptFields(
            pb.EncryptFieldsRequest(
                subject_id="m-never",
                fields=[pb.PlainField(context=context("phone"), plaintext=PHONE)],
            ),
            metadata=accounts_role(suite),
        ),
        FAILED_PRECONDITION,
        reason="SUBJECT_KEY_DESTROYED",
    )
    row = await db.fetchrow(
        "SELECT key_version, kek_id, wrapped_key, destroyed_at FROM privacy.subject_keys"
        " WHERE subject_id = 'm-never'"
    )
    assert row is not None
    assert (row["key_version"], row["kek_id"], row["wrapped_key"]) == (0, None, None)
    assert row["destroyed_at"] is not None

    again = await suite.privacy.DestroySubjectKey(request, metadata=privacy_role(suite))
    assert not again.destroyed
    # a tombstone is no data key: the key ring status counts none
    status = await suite.privacy.GetKeyRingStatus(
        pb.GetKeyRingStatusRequest(), metadata=admin_role(suite)
    )
    assert (status.destroyed_data_keys, status.data_keys_to_rewrap) == (0, 0)


# --- fields of another service ---------------------------------------------------------------


def points_field() -> pb.FieldContext:
    return context("balance", table="ledger", service="points")


def encrypt_request(*contexts: pb.FieldContext) -> pb.EncryptFieldsRequest:
    return pb.EncryptFieldsRequest(
        subject_id="m-1", fields=[pb.PlainField(context=c, plaintext=b"42") for c in contexts]
    )


def decrypt_request(ciphertext: bytes) -> pb.DecryptFieldsRequest:
    return pb.DecryptFieldsRequest(
        subject_id="m-1",
        fields=[pb.CipherField(context=points_field(), ciphertext=ciphertext)],
        purpose="statement",
    )


async def test_a_service_may_only_handle_its_own_fields(
    suite: Suite, db: asyncpg.Connection
) -> None:
    accounts: Metadata = accounts_role(suite)
    for request in [
        encrypt_request(points_field()),
        encrypt_request(context("phone"), points_field()),
    ]:
        await expect_error(
            suite.privacy.EncryptFields(request, metadata=accounts),
            PERMISSION_DENIED,
            reason="CONTEXT_NOT_OWNED",
        )
    assert await db.fetchval("SELECT count(*) FROM privacy.subject_keys") == 0

    # privacy handles every service's fields (data-subject requests)
    privacy = privacy_role(suite)
    encrypted = await suite.privacy.EncryptFields(encrypt_request(points_field()), metadata=privacy)
    (ciphertext,) = encrypted.ciphertexts
    await expect_error(
        suite.privacy.DecryptFields(decrypt_request(ciphertext), metadata=accounts),
        PERMISSION_DENIED,
        reason="CONTEXT_NOT_OWNED",
    )
    refused = [e.event for e in await audit_entries(db)]
    assert [(e.action, e.actor_role) for e in refused] == [
        ("fields.decrypt_refused", "service:accounts")
    ]
    decrypted = await suite.privacy.DecryptFields(decrypt_request(ciphertext), metadata=privacy)
    assert list(decrypted.plaintexts) == [b"42"]
    # its own fields still work for accounts
    assert len(await encrypt(suite, "m-1", [("phone", PHONE)])) == 1


async def test_a_service_may_only_index_its_own_fields(suite: Suite) -> None:
    def index_request(*contexts: str) -> pb.ComputeBlindIndexRequest:
        return pb.ComputeBlindIndexRequest(
            inputs=[pb.BlindIndexInput(context=c, value=b"42") for c in contexts]
        )

    accounts = accounts_role(suite)
    await expect_error(
        suite.privacy.ComputeBlindIndex(
            index_request("accounts.members.phone", "points.lots.owner"), metadata=accounts
        ),
        PERMISSION_DENIED,
        reason="CONTEXT_NOT_OWNED",
    )
    own = await suite.privacy.ComputeBlindIndex(
        index_request("accounts.members.phone"), metadata=accounts
    )
    other = await suite.privacy.ComputeBlindIndex(
        index_request("accounts.members.phone"), metadata=privacy_role(suite)
    )
    assert own.digests == other.digests


# --- re-wrapping with bad data keys ----------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def rewrap_logs() -> Iterator[Records]:
    logger = logging.getLogger("membership.privacy.rewrap")
    handler = Records()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def wait_for_pending(suite: Suite, pending: int) -> None:
    deadline = asyncio.get_running_loop().time() + REWRAP_WAIT_S
    while True:
        status = await suite.privacy.GetKeyRingStatus(
            pb.GetKeyRingStatusRequest(), metadata=admin_role(suite)
        )
        if status.data_keys_to_rewrap == pending:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{status.data_keys_to_rewrap} data keys to re-wrap, not {pending}"
            )
        await asyncio.sleep(0.05)


async def test_rewrap_skips_keys_it_cannot_unwrap_and_moves_the_rest(
    suite: Suite, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch, rewrap_logs: Records
) -> None:
    monkeypatch.setattr(field_crypto, "REWRAP_BATCH", 2)
    subjects = [f"m-{i}" for i in range(6)]
    for subject in subjects:
        await encrypt(suite, subject, [("phone", PHONE)])
    # the first batch holds only bad data keys: a lost key-encryption key, a corrupt wrap
    await db.execute("UPDATE privacy.subject_keys SET kek_id = 'kek-lost' WHERE subject_id = 'm-0'")
    await db.execute(
        "UPDATE privacy.subject_keys SET wrapped_key = '\\x00'::bytea || wrapped_key"
        " WHERE subject_id = 'm-1'"
    )
    rotated = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin_role(suite)
    )
    await wait_for_pending(suite, 2)  # the bad ones stay counted
    assert {await kek_of(db, s) for s in subjects[2:]} == {rotated.primary_kek_id}
    assert await kek_of(db, "m-0") == "kek-lost"
    assert await kek_of(db, "m-1") == rotated.previous_kek_id

    # a pass ends although the same two keys fail again
    rewrapper = component(suite).rewrapper
    result = await asyncio.wait_for(rewrapper.drain(), REWRAP_WAIT_S)
    assert (result.moved, result.failed) == (0, 2)
    assert dict(result.failures) == {"KeyRingError": 1, "CiphertextError": 1}
    assert rewrapper.last_pass_failed == 2
    warnings = [r for r in rewrap_logs.records if r.levelno == logging.WARNING]
    assert warnings
    for record in warnings:
        fields = getattr(record, "fields", {})
        assert fields["failed"] == 2
        assert not [s for s in subjects if s in record.getMessage() + repr(fields)]


# --- rotation that stops halfway -------------------------------------------------------------


async def test_a_rotation_failing_in_the_database_leaves_the_primary_alone(
    suite: Suite, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    crypto = component(suite).crypto
    original = ring_on_disk(suite).primary

    async def database_gone(*args: object) -> None:
        raise ConnectionError("database went away")

    with monkeypatch.context() as patch:
        patch.setattr(key_store, "insert_rotation", database_gone)
        with pytest.raises(ConnectionError):
            await crypto.rotate(ADMIN, "rotate-1")
    ring = ring_on_disk(suite)
    assert ring.primary == original
    assert len(ring.all_keys()) == 2  # the new key waits in the file, unused
    assert await db.fetchval("SELECT count(*) FROM privacy.key_rotations") == 0
    assert await rotation_audits(db) == 0
    await encrypt(suite, "m-1", [("phone", PHONE)])
    assert await kek_of(db, "m-1") == original.kek_id

    # the retry rotates
    result = await crypto.rotate(ADMIN, "rotate-1")
    assert result.previous_kek_id == original.kek_id
    assert ring_on_disk(suite).primary.kek_id == result.primary_kek_id
    assert await rotation_audits(db) == 1


def crash_in_make_primary(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies after the rotation record committed, before the key file changed."""

    def crash(self: keyring.KeyRing, kek_id: str, only_if_primary: str | None = None) -> bool:
        raise OSError("process died")

    monkeypatch.setattr(keyring.KeyRing, "make_primary", crash)


async def recorded(db: asyncpg.Connection, request_id: str) -> tuple[str, str]:
    row = await db.fetchrow(
        "SELECT previous_kek_id, primary_kek_id FROM privacy.key_rotations WHERE request_id = $1",
        request_id,
    )
    assert row is not None
    return row["previous_kek_id"], row["primary_kek_id"]


async def test_a_repeat_completes_a_rotation_whose_key_is_not_primary_yet(
    suite: Suite, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = ring_on_disk(suite).primary
    with monkeypatch.context() as patch:
        crash_in_make_primary(patch)
        with pytest.raises(OSError):
            await component(suite).crypto.rotate(ADMIN, "rotate-1")
    previous, new = await recorded(db, "rotate-1")
    assert previous == original.kek_id
    assert ring_on_disk(suite).primary == original

    repeat = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin_role(suite)
    )
    assert (repeat.previous_kek_id, repeat.primary_kek_id) == (previous, new)
    assert ring_on_disk(suite).primary.kek_id == new
    assert await rotation_audits(db) == 1  # completed, not rotated twice
    await encrypt(suite, "m-1", [("phone", PHONE)])
    assert await kek_of(db, "m-1") == new


async def test_a_repeat_does_not_undo_a_later_rotation(
    suite: Suite, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = admin_role(suite)
    with monkeypatch.context() as patch:
        crash_in_make_primary(patch)
        with pytest.raises(OSError):
            await component(suite).crypto.rotate(ADMIN, "rotate-1")
    _, stuck = await recorded(db, "rotate-1")
    later = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-2"), metadata=admin
    )
    assert ring_on_disk(suite).primary.kek_id == later.primary_kek_id
    repeat = await suite.privacy.RotateKeyEncryptionKey(
        pb.RotateKeyEncryptionKeyRequest(request_id="rotate-1"), metadata=admin
    )
    assert repeat.primary_kek_id == stuck  # what was recorded ...
    assert ring_on_disk(suite).primary.kek_id == later.primary_kek_id  # ... changes nothing
