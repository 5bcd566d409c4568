"""gRPC <-> domain for membership.privacy.v1.FieldCryptoService (messages: proto_field_crypto.py,
the use case: field_crypto.py)."""

from __future__ import annotations

import grpc
from membership.privacy.v1 import field_crypto_pb2 as pb
from membership.privacy.v1 import field_crypto_pb2_grpc as pb_grpc

from services.privacy import proto_field_crypto as proto
from services.privacy.field_crypto import FieldCrypto
from services.runtime.context import current_caller, request_id


class FieldCryptoServicer(pb_grpc.FieldCryptoServiceServicer):
    def __init__(self, crypto: FieldCrypto) -> None:
        self._crypto = crypto

    async def EncryptFields(
        self, request: pb.EncryptFieldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EncryptFieldsResponse:
        fields, inputs = proto.encryption_of(request)
        caller = current_caller()
        # the indexes first: a caller refused them has no data key made for nothing
        digests, index_key_id = self._crypto.blind_indexes(caller, inputs) if inputs else ([], "")
        ciphertexts, key_id = await self._crypto.encrypt(caller, request.subject_id, fields)
        return pb.EncryptFieldsResponse(
            ciphertexts=ciphertexts,
            data_key_id=key_id,
            digests=digests,
            index_key_id=index_key_id,
        )

    async def DecryptFields(
        self, request: pb.DecryptFieldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecryptFieldsResponse:
        asked = proto.decryption_of(request)
        plaintexts = await self._crypto.decrypt(
            current_caller(),
            asked.subject_id,
            asked.fields,
            purpose=asked.purpose,
            on_behalf_of=asked.on_behalf_of,
            request_id=request_id(),
        )
        return pb.DecryptFieldsResponse(plaintexts=plaintexts)

    async def ComputeBlindIndex(
        self, request: pb.ComputeBlindIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.ComputeBlindIndexResponse:
        inputs = proto.index_inputs_of(request)
        digests, key_id = self._crypto.blind_indexes(current_caller(), inputs)
        return pb.ComputeBlindIndexResponse(digests=digests, index_key_id=key_id)

    async def RotateKeyEncryptionKey(
        self, request: pb.RotateKeyEncryptionKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateKeyEncryptionKeyResponse:
        key = proto.rotation_key_of(request)
        result = await self._crypto.rotate(current_caller(), key)
        return pb.RotateKeyEncryptionKeyResponse(
            primary_kek_id=result.primary_kek_id,
            previous_kek_id=result.previous_kek_id,
            data_keys_to_rewrap=result.data_keys_to_rewrap,
        )

    async def GetKeyRingStatus(
        self, request: pb.GetKeyRingStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.KeyRingStatus:
        return proto.key_ring_status_pb(await self._crypto.status())

    async def DestroySubjectKey(
        self, request: pb.DestroySubjectKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.DestroySubjectKeyResponse:
        asked = proto.destruction_of(request)
        destroyed_at = await self._crypto.destroy_subject_key(
            current_caller(), asked.subject_id, request_id=asked.request_id, reason=asked.reason
        )
        response = pb.DestroySubjectKeyResponse(destroyed=destroyed_at is not None)
        if destroyed_at is not None:
            response.destroy_time.FromDatetime(destroyed_at)
        return response
