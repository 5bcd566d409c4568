"""membership.privacy.v1.FieldCryptoService's messages <-> domain: requests parsed and
checked (every field violation at once), key-ring reports as messages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf import timestamp_pb2
from membership.privacy.v1 import field_crypto_pb2 as pb

from services.privacy.domain.envelope import FieldContext
from services.privacy.domain.field_crypto import FieldValue, IndexInput, KeyRingReport
from services.privacy.proto import SUBJECT_ID, SUBJECT_ID_RULE
from services.runtime.errors import ViolationCollector

MAX_FIELDS = 64
MAX_PLAINTEXT_BYTES = 4096
MAX_CIPHERTEXT_BYTES = 8192
MAX_TEXT = 200
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
INDEX_CONTEXT = re.compile(r"^[a-z][a-z0-9_.]{0,127}$")


@dataclass(frozen=True)
class Decryption:
    subject_id: str
    fields: list[FieldValue]
    purpose: str
    on_behalf_of: str


@dataclass(frozen=True)
class Destruction:
    subject_id: str
    request_id: str
    reason: str


def _check_subject(v: ViolationCollector, subject_id: str, path: str = "subject_id") -> None:
    if not SUBJECT_ID.fullmatch(subject_id):
        v.add(path, f"required: {SUBJECT_ID_RULE}")


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


def encryption_of(request: pb.EncryptFieldsRequest) -> tuple[list[FieldValue], list[IndexInput]]:
    """The fields to encrypt, and the values to index in the same call (0 to MAX_FIELDS);
    every violation at once."""
    v = ViolationCollector()
    _check_subject(v, request.subject_id)
    contexts = _contexts(v, request.fields)
    for i, f in enumerate(request.fields):
        if len(f.plaintext) > MAX_PLAINTEXT_BYTES:
            v.add(f"fields[{i}].plaintext", f"at most {MAX_PLAINTEXT_BYTES} bytes")
    inputs = request.blind_index_inputs
    if len(inputs) > MAX_FIELDS:
        v.add("blind_index_inputs", f"at most {MAX_FIELDS} inputs")
    _check_index_inputs(v, inputs, "blind_index_inputs")
    v.raise_if_any()
    fields = [FieldValue(c, f.plaintext) for c, f in zip(contexts, request.fields, strict=True)]
    return fields, [IndexInput(i.context, i.value) for i in inputs]


def decryption_of(request: pb.DecryptFieldsRequest) -> Decryption:
    v = ViolationCollector()
    _check_subject(v, request.subject_id)
    contexts = _contexts(v, request.fields)
    for i, f in enumerate(request.fields):
        if not 0 < len(f.ciphertext) <= MAX_CIPHERTEXT_BYTES:
            v.add(f"fields[{i}].ciphertext", f"required, at most {MAX_CIPHERTEXT_BYTES} bytes")
    v.text(request.purpose, "purpose", MAX_TEXT)
    v.text(request.on_behalf_of, "on_behalf_of", MAX_TEXT, required=False)
    v.raise_if_any()
    fields = [FieldValue(c, f.ciphertext) for c, f in zip(contexts, request.fields, strict=True)]
    return Decryption(request.subject_id, fields, request.purpose.strip(), request.on_behalf_of)


def index_inputs_of(request: pb.ComputeBlindIndexRequest) -> list[IndexInput]:
    v = ViolationCollector()
    if not 1 <= len(request.inputs) <= MAX_FIELDS:
        v.add("inputs", f"between 1 and {MAX_FIELDS} inputs")
    _check_index_inputs(v, request.inputs, "inputs")
    v.raise_if_any()
    return [IndexInput(i.context, i.value) for i in request.inputs]


def _check_index_inputs(
    v: ViolationCollector, inputs: Sequence[pb.BlindIndexInput], field_path: str
) -> None:
    for i, item in enumerate(inputs):
        if not INDEX_CONTEXT.fullmatch(item.context):
            v.add(f"{field_path}[{i}].context", "required: lower-case dotted identifier")
        if not 0 < len(item.value) <= MAX_PLAINTEXT_BYTES:
            v.add(f"{field_path}[{i}].value", f"required, at most {MAX_PLAINTEXT_BYTES} bytes")


def rotation_key_of(request: pb.RotateKeyEncryptionKeyRequest) -> str:
    v = ViolationCollector()
    v.request_id(request.request_id)
    v.raise_if_any()
    return request.request_id


def destruction_of(request: pb.DestroySubjectKeyRequest) -> Destruction:
    v = ViolationCollector()
    _check_subject(v, request.subject_id)
    v.request_id(request.request_id)
    v.text(request.reason, "reason", MAX_TEXT)
    v.raise_if_any()
    return Destruction(request.subject_id, request.request_id, request.reason)


def key_ring_status_pb(report: KeyRingReport) -> pb.KeyRingStatus:
    keys = []
    for key in report.keys:
        created = timestamp_pb2.Timestamp()
        created.FromNanoseconds(int(key.created_at * 1e9))
        keys.append(
            pb.KeyEncryptionKeyInfo(
                kek_id=key.kek_id,
                primary=key.primary,
                create_time=created,
                wrapped_data_keys=key.wrapped_data_keys,
            )
        )
    return pb.KeyRingStatus(
        keys=keys,
        data_keys_to_rewrap=report.data_keys_to_rewrap,
        destroyed_data_keys=report.destroyed_data_keys,
        provider=report.provider,
    )
