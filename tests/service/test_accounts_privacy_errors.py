"""How accounts answers when the privacy service refuses a call: a destroyed subject key is an
erased member, a stored ciphertext that does not authenticate in its row (moved, tampered) is
DATA_LOSS, and anything else privacy refuses is accounts' own INTERNAL error."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from membership.accounts.v1 import accounts_pb2 as apb
from membership.privacy.v1 import field_crypto_pb2 as ppb

from services.accounts.ports_privacy import translate_error
from services.runtime.errors import Code
from tests.support.accounts import register
from tests.support.rpc_errors import STATUS_DETAILS_KEY, expect_error
from tests.support.suite import Suite

PHONE = "13800138000"
NAME = "张三"
DATA_LOSS = grpc.StatusCode.DATA_LOSS


async def _get_full(suite: Suite, name: str) -> apb.Member:
    member: apb.Member = await suite.accounts.GetMember(
        apb.GetMemberRequest(name=name, view=apb.MEMBER_VIEW_FULL, purpose="complaint 7"),
        metadata=suite.auth("officer"),
    )
    return member


async def test_ciphertext_moved_to_another_row_is_data_loss(
    suite: Suite, db: asyncpg.Connection
) -> None:
    first = await register(suite, PHONE, display_name=NAME)
    second = await register(suite, "13900139000", display_name="李四")
    await db.execute(
        "UPDATE accounts.members SET phone_ct = (SELECT phone_ct FROM accounts.members"
        " WHERE member_id = $1) WHERE member_id = $2",
        first.member_id,
        second.member_id,
    )
    err = await expect_error(
        _get_full(suite, second.name), DATA_LOSS, reason="CIPHERTEXT_UNREADABLE"
    )
    assert err.domain == "accounts.membership"
    for needle in ("+8613800138000", PHONE, NAME, "李四"):
        assert needle not in err.message
    assert (await _get_full(suite, first.name)).phone == "+8613800138000"


async def test_tampered_ciphertext_is_data_loss(suite: Suite, db: asyncpg.Connection) -> None:
    member = await register(suite, PHONE, display_name=NAME)
    await db.execute(
        "UPDATE accounts.members SET display_name_ct = set_byte(display_name_ct,"
        " length(display_name_ct) - 1, get_byte(display_name_ct, length(display_name_ct) - 1) # 1)"
        " WHERE member_id = $1",
        member.member_id,
    )
    await expect_error(_get_full(suite, member.name), DATA_LOSS, reason="CIPHERTEXT_UNREADABLE")


async def test_destroyed_subject_key_is_an_erased_member(suite: Suite) -> None:
    member = await register(suite, PHONE)
    await suite.privacy.DestroySubjectKey(
        ppb.DestroySubjectKeyRequest(subject_id=member.member_id, request_id="d1", reason="dsr-1"),
        metadata=suite.auth("service:privacy"),
    )
    await expect_error(
        _get_full(suite, member.name), grpc.StatusCode.FAILED_PRECONDITION, reason="MEMBER_ERASED"
    )


# --- the translation itself ----------------------------------------------------------------


def _rpc_error(
    code: grpc.StatusCode, reason: str = "", violations: tuple[str, ...] = ()
) -> grpc.aio.AioRpcError:
    """An error as privacy's interceptor sends it: google.rpc.Status in trailing metadata."""
    details = []
    if reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="privacy.membership"))
        details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description="bad")
                    for f in violations
                ]
            )
        )
        details.append(bad)
    status = status_pb2.Status(code=code.value[0], message="refused", details=details)
    trailing = grpc.aio.Metadata((STATUS_DETAILS_KEY, status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, "refused")


FP = grpc.StatusCode.FAILED_PRECONDITION
INVALID = grpc.StatusCode.INVALID_ARGUMENT
CIPHERTEXTS = ("fields[0].ciphertext", "fields[2].ciphertext")
ERASED = (Code.FAILED_PRECONDITION, "MEMBER_ERASED")
UNREADABLE = (Code.DATA_LOSS, "CIPHERTEXT_UNREADABLE")
DOWN = (Code.UNAVAILABLE, "PRIVACY_UNAVAILABLE")
BUG = (Code.INTERNAL, "INTERNAL")
NO_DETAILS = grpc.aio.AioRpcError(FP, grpc.aio.Metadata(), grpc.aio.Metadata())
GARBLED = grpc.aio.AioRpcError(
    FP, grpc.aio.Metadata(), grpc.aio.Metadata((STATUS_DETAILS_KEY, b"\xff garbage"))
)


@pytest.mark.parametrize(
    ("err", "rpc", "expected"),
    [
        (_rpc_error(FP, "SUBJECT_KEY_DESTROYED"), "DecryptFields", ERASED),
        (_rpc_error(FP, "SUBJECT_KEY_DESTROYED"), "EncryptFields", ERASED),
        (_rpc_error(FP, "KEYRING_READ_ONLY"), "EncryptFields", BUG),
        (_rpc_error(FP), "DecryptFields", BUG),
        (NO_DETAILS, "DecryptFields", BUG),
        (GARBLED, "DecryptFields", BUG),
        (_rpc_error(INVALID, "INVALID_ARGUMENT", CIPHERTEXTS), "DecryptFields", UNREADABLE),
        (_rpc_error(INVALID, "INVALID_ARGUMENT", ("purpose",)), "DecryptFields", BUG),
        (_rpc_error(INVALID, "INVALID_ARGUMENT", CIPHERTEXTS), "EncryptFields", BUG),
        (_rpc_error(INVALID, "INVALID_ARGUMENT"), "ComputeBlindIndex", BUG),
        (_rpc_error(grpc.StatusCode.NOT_FOUND, "NOT_FOUND"), "DecryptFields", BUG),
        (_rpc_error(grpc.StatusCode.UNAVAILABLE), "EncryptFields", DOWN),
        (_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED), "DecryptFields", DOWN),
    ],
)
def test_translation_of_privacy_errors(
    err: grpc.aio.AioRpcError, rpc: str, expected: tuple[Code, str]
) -> None:
    translated = translate_error(err, rpc)
    assert (translated.code, translated.reason) == expected
