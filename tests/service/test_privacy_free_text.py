"""Free-text fields of the privacy service (purpose, on_behalf_of, reason, request_id) with
control characters are INVALID_ARGUMENT, never INTERNAL (PostgreSQL text cannot hold NUL),
and leave no audit entry."""

from __future__ import annotations

import grpc
from google.protobuf.message import Message
from membership.privacy.v1 import field_crypto_pb2 as ppb

from tests.support.accounts import fetchval
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

CONTEXT = ppb.FieldContext(service="accounts", table="members", column="phone")


async def test_control_characters_in_free_text_are_invalid(suite: Suite) -> None:
    encrypted = await suite.privacy.EncryptFields(
        ppb.EncryptFieldsRequest(
            subject_id="s1", fields=[ppb.PlainField(context=CONTEXT, plaintext=b"x")]
        ),
        metadata=suite.auth("service:accounts"),
    )
    field = ppb.CipherField(context=CONTEXT, ciphertext=encrypted.ciphertexts[0])
    audit_before = await fetchval(suite.dsn, "SELECT count(*) FROM privacy.audit_log")
    cases: list[tuple[str, str, Message, str]] = [
        (
            "DecryptFields",
            "service:accounts",
            ppb.DecryptFieldsRequest(subject_id="s1", fields=[field], purpose="a\x00b"),
            "purpose",
        ),
        (
            "DecryptFields",
            "service:accounts",
            ppb.DecryptFieldsRequest(
                subject_id="s1", fields=[field], purpose="ok", on_behalf_of="officer\x00"
            ),
            "on_behalf_of",
        ),
        (
            "DestroySubjectKey",
            "service:privacy",
            ppb.DestroySubjectKeyRequest(subject_id="s1", request_id="r\x00", reason="x"),
            "request_id",
        ),
        (
            "DestroySubjectKey",
            "service:privacy",
            ppb.DestroySubjectKeyRequest(subject_id="s1", request_id="r", reason="x\x00y"),
            "reason",
        ),
        (
            "RotateKeyEncryptionKey",
            "admin",
            ppb.RotateKeyEncryptionKeyRequest(request_id="rot\x00"),
            "request_id",
        ),
    ]
    for method, role, request, path in cases:
        await expect_error(
            getattr(suite.privacy, method)(request, metadata=suite.auth(role)),
            grpc.StatusCode.INVALID_ARGUMENT,
            fields={path},
        )
    assert await fetchval(suite.dsn, "SELECT count(*) FROM privacy.audit_log") == audit_before
    # the key was not destroyed: the ciphertext still decrypts
    decrypted = await suite.privacy.DecryptFields(
        ppb.DecryptFieldsRequest(subject_id="s1", fields=[field], purpose="check"),
        metadata=suite.auth("service:accounts"),
    )
    assert list(decrypted.plaintexts) == [b"x"]
