"""The PrivacyPort over gRPC: membership.privacy.v1.FieldCryptoService and ConsentService;
privacy's refusals become accounts' own domain errors."""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf import message
from google.rpc import error_details_pb2, status_pb2
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import consent_pb2_grpc as cpb_grpc
from membership.privacy.v1 import field_crypto_pb2 as pb
from membership.privacy.v1 import field_crypto_pb2_grpc as pb_grpc

from services.accounts.domain import reasons
from services.accounts.domain.consents import Channel, ConsentGrant
from services.accounts.domain.lifecycle import member_erased
from services.accounts.ports import SERVICE, TABLE, CipherField, IndexInput, PlainField
from services.runtime.clients import ServiceCredentials
from services.runtime.errors import (
    Code,
    DomainError,
    FieldViolation,
    failed_precondition,
    invalid_argument,
    unavailable,
)
from services.runtime.names import member_name

Response = TypeVar("Response", bound=message.Message)

STATUS_DETAILS_KEY = "grpc-status-details-bin"


class PrivacyRpc(enum.StrEnum):
    """The calls accounts makes to privacy: their errors translate per call."""

    COMPUTE_BLIND_INDEX = "ComputeBlindIndex"
    ENCRYPT_FIELDS = "EncryptFields"
    DECRYPT_FIELDS = "DecryptFields"
    GRANT_CONSENT = "GrantConsent"


DECRYPT = PrivacyRpc.DECRYPT_FIELDS
GRANT = PrivacyRpc.GRANT_CONSENT
# a field of one of GrantConsent's grants; they are RegisterMember's `consents`, in order
_GRANT_FIELD = re.compile(r"grants(\[[0-9]+\](?:\.[a-z_]+)?)")
_GRANT_INDEX = re.compile(r"[0-9]{1,3}")
_CHANNELS: dict[Channel, cpb.Channel.ValueType] = {
    Channel.APP: cpb.CHANNEL_APP,
    Channel.WEB: cpb.CHANNEL_WEB,
    Channel.COUNTER: cpb.CHANNEL_COUNTER,
    Channel.PHONE: cpb.CHANNEL_PHONE,
}
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


@dataclass(frozen=True)
class _Refusal:
    """What privacy's google.rpc.Status says beyond the code."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        return [v.field for v in self.violations]


def _details(err: grpc.aio.AioRpcError) -> _Refusal:
    """ErrorInfo reason and metadata and the BadRequest violations of a privacy error."""
    reason, metadata, violations = "", {}, []
    for detail in _status_details(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
    return _Refusal(reason, metadata, violations)


def translate_error(err: grpc.aio.AioRpcError, rpc: str) -> DomainError:
    """A refusal of privacy's `rpc` as accounts answers it to its own caller."""
    code = err.code()
    if code in _TRANSIENT:
        return unavailable(reasons.PRIVACY_UNAVAILABLE, "the privacy service is unavailable; retry")
    refusal = _details(err)
    if (
        code == grpc.StatusCode.FAILED_PRECONDITION
        and refusal.reason == reasons.SUBJECT_KEY_DESTROYED
    ):
        return member_erased()
    consent_refusal = _consent_refusal(code, refusal) if rpc == GRANT else None
    if consent_refusal is not None:
        return consent_refusal
    if (
        code == grpc.StatusCode.INVALID_ARGUMENT
        and rpc == DECRYPT
        and _only_ciphertexts(refusal.fields)
    ):
        # accounts sent what its own row holds: a stored ciphertext that does not
        # authenticate there was moved or tampered with
        return DomainError(
            Code.DATA_LOSS,
            reasons.CIPHERTEXT_UNREADABLE,
            "a stored field of the member is unreadable",
        )
    # anything else is a bug on one side or the other, not the caller's doing
    return DomainError.internal("privacy service rejected the call")


def _only_ciphertexts(fields: list[str]) -> bool:
    return bool(fields) and all(f.endswith(".ciphertext") for f in fields)


def _consent_refusal(code: grpc.StatusCode, refusal: _Refusal) -> DomainError | None:
    """A refusal of the sign-up consents the caller gave, in RegisterMember's terms (the
    grants are its `consents`, in order); None when privacy refused something accounts
    itself chose (member, channel, request_id): that is a bug, not the caller's doing."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        fields = [_consents_field(f) for f in refusal.fields]
        if fields and all(fields):
            return invalid_argument(
                [
                    FieldViolation(f, v.description)
                    for f, v in zip(fields, refusal.violations, strict=True)
                ]
            )
    stale = refusal.reason == reasons.NOTICE_VERSION_STALE
    if code == grpc.StatusCode.FAILED_PRECONDITION and stale:
        error = failed_precondition(
            reasons.NOTICE_VERSION_STALE,
            "the notice version shown is not the purpose's current one",
        )
        index = refusal.metadata.get("grant_index", "")
        if _GRANT_INDEX.fullmatch(index):
            error.metadata = {"consent_index": index}
        return error
    return None


def _consents_field(grant_field: str) -> str:
    """`grants[i].purpose` -> `consents[i].purpose`; "" for any other field."""
    match = _GRANT_FIELD.fullmatch(grant_field)
    return f"consents{match.group(1)}" if match else ""


class GrpcPrivacy:
    def __init__(
        self, channel: grpc.aio.Channel, credentials: ServiceCredentials, timeout_s: float
    ) -> None:
        self._stub = pb_grpc.FieldCryptoServiceStub(channel)
        self._consent = cpb_grpc.ConsentServiceStub(channel)
        self._credentials = credentials
        self._timeout_s = timeout_s

    async def _call(
        self, method: Callable[..., Awaitable[Response]], request: message.Message, rpc: PrivacyRpc
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

    async def blind_indexes(self, inputs: Sequence[IndexInput]) -> list[bytes]:
        request = pb.ComputeBlindIndexRequest(
            inputs=[pb.BlindIndexInput(context=i.context, value=i.value) for i in inputs]
        )
        response = await self._call(
            self._stub.ComputeBlindIndex, request, PrivacyRpc.COMPUTE_BLIND_INDEX
        )
        return list(response.digests)

    async def encrypt(self, member_id: str, fields: Sequence[PlainField]) -> list[bytes]:
        ciphertexts, _ = await self.encrypt_and_index(member_id, fields, ())
        return ciphertexts

    async def encrypt_and_index(
        self, member_id: str, fields: Sequence[PlainField], inputs: Sequence[IndexInput]
    ) -> tuple[list[bytes], list[bytes]]:
        request = pb.EncryptFieldsRequest(
            subject_id=member_id,
            fields=[
                pb.PlainField(context=self._context(f.column), plaintext=f.plaintext)
                for f in fields
            ],
            blind_index_inputs=[
                pb.BlindIndexInput(context=i.context, value=i.value) for i in inputs
            ],
        )
        response = await self._call(self._stub.EncryptFields, request, PrivacyRpc.ENCRYPT_FIELDS)
        return list(response.ciphertexts), list(response.digests)

    async def decrypt(
        self,
        member_id: str,
        fields: Sequence[CipherField],
        *,
        purpose: str,
        on_behalf_of: str,
    ) -> list[bytes]:
        request = pb.DecryptFieldsRequest(
            subject_id=member_id,
            fields=[
                pb.CipherField(context=self._context(f.column), ciphertext=f.ciphertext)
                for f in fields
            ],
            purpose=purpose,
            on_behalf_of=on_behalf_of,
        )
        response = await self._call(self._stub.DecryptFields, request, DECRYPT)
        return list(response.plaintexts)

    async def record_consents(
        self,
        member_id: str,
        grants: Sequence[ConsentGrant],
        channel: Channel,
        *,
        request_id: str,
    ) -> None:
        request = cpb.GrantConsentRequest(
            member=member_name(member_id),
            grants=[
                cpb.PurposeGrant(purpose=g.purpose, notice_version=g.notice_version) for g in grants
            ],
            channel=_CHANNELS[channel],
            request_id=request_id,
        )
        await self._call(self._consent.GrantConsent, request, GRANT)
