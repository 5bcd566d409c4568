"""gRPC adapter: the PrivacyPort over membership.privacy.v1.FieldCryptoService."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from membership.privacy.v1 import field_crypto_pb2 as pb
from membership.privacy.v1 import field_crypto_pb2_grpc as pb_grpc

from services.accounts.lifecycle import member_erased
from services.accounts.ports import SERVICE, TABLE
from services.runtime.clients import ServiceCredentials
from services.runtime.errors import Code, DomainError, unavailable

Response = TypeVar("Response", bound=message.Message)

STATUS_DETAILS_KEY = "grpc-status-details-bin"
DECRYPT = "DecryptFields"
_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _status_details(err: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status privacy attached to the error (empty if none or unreadable)."""
    for key, value in err.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except message.DecodeError:
                break
    return status_pb2.Status()


def _details(err: grpc.aio.AioRpcError) -> tuple[str, list[str]]:
    """ErrorInfo reason and the fields of BadRequest violations of a privacy error."""
    reason, fields = "", []
    for detail in _status_details(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
    return reason, fields


def translate_error(err: grpc.aio.AioRpcError, rpc: str) -> DomainError:
    """A refusal of privacy's `rpc` as accounts answers it to its own caller."""
    code = err.code()
    if code in _TRANSIENT:
        return unavailable("PRIVACY_UNAVAILABLE", "the privacy service is unavailable; retry")
    reason, fields = _details(err)
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason == "SUBJECT_KEY_DESTROYED":
        return member_erased()
    if code == grpc.StatusCode.INVALID_ARGUMENT and rpc == DECRYPT and _only_ciphertexts(fields):
        # accounts sent what its own row holds: a stored ciphertext that does not
        # authenticate there was moved or tampered with
        return DomainError(
            Code.DATA_LOSS, "CIPHERTEXT_UNREADABLE", "a stored field of the member is unreadable"
        )
    # anything else is a bug on one side or the other, not the caller's doing
    return DomainError.internal("privacy service rejected the call")


def _only_ciphertexts(fields: list[str]) -> bool:
    return bool(fields) and all(f.endswith(".ciphertext") for f in fields)


class GrpcPrivacy:
    def __init__(
        self, channel: grpc.aio.Channel, credentials: ServiceCredentials, timeout_s: float
    ) -> None:
        self._stub = pb_grpc.FieldCryptoServiceStub(channel)
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def _call(
        self, method: Callable[..., Awaitable[Response]], request: message.Message, rpc: str
    ) -> Response:
        """One call of privacy's `rpc` with a deadline and this service's token; failures
        as domain errors."""
        try:
            return await method(
                request, timeout=self._timeout_s, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as err:
            raise translate_error(err, rpc) from None

    @staticmethod
    def _context(column: str) -> pb.FieldContext:
        return pb.FieldContext(service=SERVICE, table=TABLE, column=column)

    async def blind_indexes(self, inputs: Sequence[tuple[str, bytes]]) -> list[bytes]:
        request = pb.ComputeBlindIndexRequest(
            inputs=[pb.BlindIndexInput(context=c, value=v) for c, v in inputs]
        )
        response = await self._call(self._stub.ComputeBlindIndex, request, "ComputeBlindIndex")
        return list(response.digests)

    async def encrypt(self, member_id: str, fields: Sequence[tuple[str, bytes]]) -> list[bytes]:
        request = pb.EncryptFieldsRequest(
            subject_id=member_id,
            fields=[pb.PlainField(context=self._context(c), plaintext=p) for c, p in fields],
        )
        response = await self._call(self._stub.EncryptFields, request, "EncryptFields")
        return list(response.ciphertexts)

    async def decrypt(
        self,
        member_id: str,
        fields: Sequence[tuple[str, bytes]],
        purpose: str,
        on_behalf_of: str,
    ) -> list[bytes]:
        request = pb.DecryptFieldsRequest(
            subject_id=member_id,
            fields=[pb.CipherField(context=self._context(c), ciphertext=ct) for c, ct in fields],
            purpose=purpose,
            on_behalf_of=on_behalf_of,
        )
        response = await self._call(self._stub.DecryptFields, request, DECRYPT)
        return list(response.plaintexts)
