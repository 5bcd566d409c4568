"""Helpers for tests of the privacy service: roles, field contexts, encrypt and decrypt
calls, and reading its tables."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import asyncpg
import grpc
from membership.privacy.v1 import field_crypto_pb2 as pb

from services.privacy.domain.audit import StoredEntry
from services.privacy.store import audit as audit_store
from tests.support.suite import Metadata, Suite

ACCOUNTS_SUBJECT = "svc-accounts"
ADMIN_SUBJECT = "admin:root"
REWRAP_WAIT_S = 10.0

INVALID = grpc.StatusCode.INVALID_ARGUMENT
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def context(column: str, table: str = "members", service: str = "accounts") -> pb.FieldContext:
    return pb.FieldContext(service=service, table=table, column=column)


def accounts_role(suite: Suite) -> Metadata:
    return suite.auth("service:accounts", ACCOUNTS_SUBJECT)


def admin_role(suite: Suite) -> Metadata:
    return suite.auth("admin", ADMIN_SUBJECT)


def privacy_role(suite: Suite) -> Metadata:
    return suite.auth("service:privacy", "svc-privacy")


async def encrypt(
    suite: Suite, subject_id: str, fields: Sequence[tuple[str, bytes]]
) -> list[bytes]:
    response = await suite.privacy.EncryptFields(
        pb.EncryptFieldsRequest(
            subject_id=subject_id,
            fields=[pb.PlainField(context=context(c), plaintext=p) for c, p in fields],
        ),
        metadata=accounts_role(suite),
    )
    assert len(response.ciphertexts) == len(fields)
    return list(response.ciphertexts)


def decrypt_request(
    subject_id: str,
    fields: Sequence[tuple[str, bytes]],
    purpose: str = "customer support",
    on_behalf_of: str = "",
) -> pb.DecryptFieldsRequest:
    return pb.DecryptFieldsRequest(
        subject_id=subject_id,
        fields=[pb.CipherField(context=context(c), ciphertext=ct) for c, ct in fields],
        purpose=purpose,
        on_behalf_of=on_behalf_of,
    )


async def decrypt(
    suite: Suite, subject_id: str, fields: Sequence[tuple[str, bytes]], **kwargs: str
) -> list[bytes]:
    response = await suite.privacy.DecryptFields(
        decrypt_request(subject_id, fields, **kwargs), metadata=accounts_role(suite)
    )
    return list(response.plaintexts)


async def audit_entries(conn: asyncpg.Connection) -> list[StoredEntry]:
    return await audit_store.read_audit(conn, 0, 100_000)


async def kek_of(conn: asyncpg.Connection, subject_id: str) -> str | None:
    value = await conn.fetchval(
        "SELECT kek_id FROM privacy.subject_keys WHERE subject_id = $1", subject_id
    )
    return None if value is None else str(value)


async def wait_for_rewrap(suite: Suite) -> pb.KeyRingStatus:
    """Polls GetKeyRingStatus until no data key waits for re-wrapping (bounded)."""
    deadline = time.monotonic() + REWRAP_WAIT_S
    while True:
        status: pb.KeyRingStatus = await suite.privacy.GetKeyRingStatus(
            pb.GetKeyRingStatusRequest(), metadata=admin_role(suite)
        )
        if status.data_keys_to_rewrap == 0:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{status.data_keys_to_rewrap} data keys not re-wrapped in time")
        await asyncio.sleep(0.05)


PHONE = b"+8613800138000"
EMAIL = b"zhang.san@example.com"
NAME = "张三".encode()
