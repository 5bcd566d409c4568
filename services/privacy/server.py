"""gRPC <-> domain for membership.privacy.v1.FieldCryptoService."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.privacy.v1 import audit_pb2, audit_pb2_grpc, consent_pb2, consent_pb2_grpc
from membership.privacy.v1 import field_crypto_pb2 as pb
from membership.privacy.v1 import field_crypto_pb2_grpc as pb_grpc

from services.privacy import metrics as privacy_metrics
from services.privacy import settings as privacy_settings
from services.privacy.consent import Consents
from services.privacy.consent_statistics import ConsentStatisticsCache
from services.privacy.data_rights_wiring import SERVICE_NAME as DATA_RIGHTS_SERVICE
from services.privacy.data_rights_wiring import DataRightsParts, build_data_rights
from services.privacy.deadlines import load_calendar
from services.privacy.envelope import FieldContext
from services.privacy.field_crypto import FieldCrypto
from services.privacy.keyring import load_index_key, load_keyring
from services.privacy.processing_relay import PauseEventsOutbox, pause_relay
from services.privacy.purpose_catalogue import load_purposes
from services.privacy.rewrapper import Rewrapper
from services.privacy.server_audit import AuditServicer
from services.privacy.server_consent import ConsentServicer
from services.runtime.clients import ServiceCredentials, open_channel
from services.runtime.config import Settings
from services.runtime.context import current_caller, request_id
from services.runtime.errors import ViolationCollector
from services.runtime.identity import TokenSigner, load_or_create_signing_key
from services.runtime.server import ServiceSpec

MAX_FIELDS = 64
MAX_PLAINTEXT_BYTES = 4096
MAX_CIPHERTEXT_BYTES = 8192
MAX_TEXT = 200
SUBJECT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
INDEX_CONTEXT = re.compile(r"^[a-z][a-z0-9_.]{0,127}$")


def _check_subject(v: ViolationCollector, subject_id: str, path: str = "subject_id") -> None:
    if not SUBJECT_ID.fullmatch(subject_id):
        v.add(path, "required: 1-64 characters of A-Z a-z 0-9 _ . : -")


def _contexts(
    v: ViolationCollector, fields: Sequence[pb.PlainField | pb.CipherField]
) -> list[FieldContext]:
    if not 1 <= len(fields) <= MAX_FIELDS:
        v.add("fields", f"between 1 and {MAX_FIELDS} fields")
    contexts = []
    for i, f in enumerate(fields):
        for part in ("service", "table", "column"):
            if not IDENTIFIER.fullmatch(getattr(f.context, part)):
                v.add(f"fields[{i}].context.{part}", "required: a lower-case identifier")
        contexts.append(FieldContext(f.context.service, f.context.table, f.context.column))
    return contexts


class FieldCryptoServicer(pb_grpc.FieldCryptoServiceServicer):
    def __init__(self, crypto: FieldCrypto) -> None:
        self._crypto = crypto

    async def EncryptFields(
        self, request: pb.EncryptFieldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.EncryptFieldsResponse:
        v = ViolationCollector()
        _check_subject(v, request.subject_id)
        contexts = _contexts(v, request.fields)
        for i, f in enumerate(request.fields):
            if len(f.plaintext) > MAX_PLAINTEXT_BYTES:
                v.add(f"fields[{i}].plaintext", f"at most {MAX_PLAINTEXT_BYTES} bytes")
        v.raise_if_any()
        ciphertexts, key_id = await self._crypto.encrypt(
            current_caller(),
            request.subject_id,
            list(zip(contexts, [f.plaintext for f in request.fields], strict=True)),
        )
        return pb.EncryptFieldsResponse(ciphertexts=ciphertexts, data_key_id=key_id)

    async def DecryptFields(
        self, request: pb.DecryptFieldsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DecryptFieldsResponse:
        v = ViolationCollector()
        _check_subject(v, request.subject_id)
        contexts = _contexts(v, request.fields)
        for i, f in enumerate(request.fields):
            if not 0 < len(f.ciphertext) <= MAX_CIPHERTEXT_BYTES:
                v.add(f"fields[{i}].ciphertext", f"required, at most {MAX_CIPHERTEXT_BYTES} bytes")
        v.text(request.purpose, "purpose", MAX_TEXT)
        v.text(request.on_behalf_of, "on_behalf_of", MAX_TEXT, required=False)
        v.raise_if_any()
        plaintexts = await self._crypto.decrypt(
            current_caller(),
            request.subject_id,
            list(zip(contexts, [f.ciphertext for f in request.fields], strict=True)),
            request.purpose.strip(),
            request.on_behalf_of,
            request_id(),
        )
        return pb.DecryptFieldsResponse(plaintexts=plaintexts)

    async def ComputeBlindIndex(
        self, request: pb.ComputeBlindIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.ComputeBlindIndexResponse:
        v = ViolationCollector()
        if not 1 <= len(request.inputs) <= MAX_FIELDS:
            v.add("inputs", f"between 1 and {MAX_FIELDS} inputs")
        for i, item in enumerate(request.inputs):
            if not INDEX_CONTEXT.fullmatch(item.context):
                v.add(f"inputs[{i}].context", "required: lower-case dotted identifier")
            if not 0 < len(item.value) <= MAX_PLAINTEXT_BYTES:
                v.add(f"inputs[{i}].value", f"required, at most {MAX_PLAINTEXT_BYTES} bytes")
        v.raise_if_any()
        digests, key_id = self._crypto.blind_indexes(
            current_caller(), [(i.context, i.value) for i in request.inputs]
        )
        return pb.ComputeBlindIndexResponse(digests=digests, index_key_id=key_id)

    async def RotateKeyEncryptionKey(
        self, request: pb.RotateKeyEncryptionKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateKeyEncryptionKeyResponse:
        v = ViolationCollector()
        v.request_id(request.request_id)
        v.raise_if_any()
        result = await self._crypto.rotate(current_caller(), request.request_id)
        return pb.RotateKeyEncryptionKeyResponse(
            primary_kek_id=result.primary_kek_id,
            previous_kek_id=result.previous_kek_id,
            data_keys_to_rewrap=result.data_keys_to_rewrap,
        )

    async def GetKeyRingStatus(
        self, request: pb.GetKeyRingStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.KeyRingStatus:
        report = await self._crypto.status()
        keys = []
        for kek_id, primary, created_at, wrapped in report.keys:
            created = timestamp_pb2.Timestamp()
            created.FromNanoseconds(int(created_at * 1e9))
            keys.append(
                pb.KeyEncryptionKeyInfo(
                    kek_id=kek_id, primary=primary, create_time=created, wrapped_data_keys=wrapped
                )
            )
        return pb.KeyRingStatus(
            keys=keys,
            data_keys_to_rewrap=report.data_keys_to_rewrap,
            destroyed_data_keys=report.destroyed_data_keys,
            provider=report.provider,
        )

    async def DestroySubjectKey(
        self, request: pb.DestroySubjectKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.DestroySubjectKeyResponse:
        v = ViolationCollector()
        _check_subject(v, request.subject_id)
        v.request_id(request.request_id)
        v.text(request.reason, "reason", MAX_TEXT)
        v.raise_if_any()
        destroyed_at = await self._crypto.destroy_subject_key(
            current_caller(), request.subject_id, request.request_id, request.reason
        )
        response = pb.DestroySubjectKeyResponse(destroyed=destroyed_at is not None)
        if destroyed_at is not None:
            response.destroy_time.FromDatetime(destroyed_at)
        return response


class PrivacyComponent:
    service_names = (
        pb.DESCRIPTOR.services_by_name["FieldCryptoService"].full_name,
        consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].full_name,
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
        DATA_RIGHTS_SERVICE,
    )

    def __init__(
        self,
        pool: asyncpg.Pool,
        crypto: FieldCrypto,
        consents: Consents,
        settings: Settings,
        data_rights: DataRightsParts,
    ) -> None:
        self.crypto = crypto
        self.consents = consents
        self.consent_statistics = ConsentStatisticsCache(
            pool, consents.catalogue, settings.consent_statistics_ttl_s
        )
        self.data_rights = data_rights
        self.rewrapper = Rewrapper(crypto)
        self._audit = AuditServicer(pool)
        self._outbox = PauseEventsOutbox(
            lambda: open_channel(settings.addr_of("points"), settings.max_message_bytes),
            service_credentials(settings),
            settings.outgoing_timeout_s,
        )
        self._relay = pause_relay(pool, self._outbox)

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_FieldCryptoServiceServicer_to_server(FieldCryptoServicer(self.crypto), server)
        consent_pb2_grpc.add_ConsentServiceServicer_to_server(
            ConsentServicer(self.consents, self.consent_statistics), server
        )
        audit_pb2_grpc.add_AuditServiceServicer_to_server(self._audit, server)
        self.data_rights.add_to(server)
        self.rewrapper.start()
        # processing pauses reach points from here on, also while points is down (retried)
        self._relay.start()

    async def close(self) -> None:
        await self.consent_statistics.close()
        await self.data_rights.close()
        await self._relay.close()  # before the channel it sends on
        await self._outbox.close()
        await self.rewrapper.stop()


def service_credentials(settings: Settings) -> ServiceCredentials:
    signer = TokenSigner(
        load_or_create_signing_key(settings.keys_dir), settings.token_audience, "privacy"
    )
    return ServiceCredentials(signer, "service:privacy")


async def build(pool: asyncpg.Pool, settings: Settings) -> PrivacyComponent:
    own = privacy_settings.load(settings)
    keys = own.keys
    crypto = FieldCrypto(
        pool,
        load_keyring(keys.keys_dir, keys.keyring_json),
        load_index_key(keys.keys_dir, keys.index_key),
    )
    consents = Consents(pool, await load_purposes(pool, own.purposes_file))
    calendar = load_calendar(own.calendar_overrides)
    data_rights = await build_data_rights(
        pool, crypto, consents, settings, own, calendar, service_credentials(settings)
    )
    return PrivacyComponent(pool, crypto, consents, settings, data_rights)


SPEC = ServiceSpec(
    name="privacy",
    migrations_dir=Path(__file__).parent / "migrations",
    build=build,
    probes=privacy_metrics.PROBES,
)
