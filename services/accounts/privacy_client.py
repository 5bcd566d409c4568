"""gRPC adapter: the PrivacyPort over membership.privacy.v1.FieldCryptoService."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf import message
from membership.privacy.v1 import field_crypto_pb2 as pb
from membership.privacy.v1 import field_crypto_pb2_grpc as pb_grpc

from services.accounts.ports import SERVICE, TABLE
from services.runtime.clients import ServiceCredentials
from services.runtime.errors import DomainError, failed_precondition, unavailable

Response = TypeVar("Response", bound=message.Message)

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _translate(err: grpc.aio.AioRpcError) -> DomainError:
    if err.code() in _TRANSIENT:
        return unavailable("PRIVACY_UNAVAILABLE", "the privacy service is unavailable; retry")
    if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
        return failed_precondition("MEMBER_ERASED", "the member's personal information was erased")
    # anything else is a bug on one side or the other, not the caller's doing
    return DomainError.internal("privacy service rejected the call")


class GrpcPrivacy:
    def __init__(
        self, channel: grpc.aio.Channel, credentials: ServiceCredentials, timeout_s: float
    ) -> None:
        self._stub = pb_grpc.FieldCryptoServiceStub(channel)
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def _call(
        self, method: Callable[..., Awaitable[Response]], request: message.Message
    ) -> Response:
        """One call with a deadline and this service's token; failures as domain errors."""
        try:
            return await method(
                request, timeout=self._timeout_s, metadata=self._credentials.metadata()
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None

    @staticmethod
    def _context(column: str) -> pb.FieldContext:
        return pb.FieldContext(service=SERVICE, table=TABLE, column=column)

    async def blind_indexes(self, inputs: Sequence[tuple[str, bytes]]) -> list[bytes]:
        request = pb.ComputeBlindIndexRequest(
            inputs=[pb.BlindIndexInput(context=c, value=v) for c, v in inputs]
        )
        response = await self._call(self._stub.ComputeBlindIndex, request)
        return list(response.digests)

    async def encrypt(self, member_id: str, fields: Sequence[tuple[str, bytes]]) -> list[bytes]:
        request = pb.EncryptFieldsRequest(
            subject_id=member_id,
            fields=[pb.PlainField(context=self._context(c), plaintext=p) for c, p in fields],
        )
        response = await self._call(self._stub.EncryptFields, request)
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
        response = await self._call(self._stub.DecryptFields, request)
        return list(response.plaintexts)
