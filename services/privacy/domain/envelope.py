"""Envelope encryption primitives: self-describing field ciphertext, data-key wrapping and
blind indexes. Pure functions over `cryptography`; no I/O.

Field ciphertext layout (all lengths in bytes):

    b"WMC" | format version (1) | key id length (1) | key id (ascii) | nonce (12) | AES-GCM output

The associated data is the header followed by `service/table/column/subject_id`, so a
ciphertext moved to another column or another member's row, or with an altered header,
fails authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"WMC"
FORMAT_VERSION = 1
NONCE_BYTES = 12
DATA_KEY_BYTES = 32
MAX_KEY_ID_BYTES = 64


class CiphertextError(ValueError):
    """Malformed, tampered with, or bound to another context or subject."""


@dataclass(frozen=True)
class FieldContext:
    service: str
    table: str
    column: str

    def associated_data(self, subject_id: str) -> bytes:
        return f"{self.service}/{self.table}/{self.column}/{subject_id}".encode()


@dataclass(frozen=True)
class ParsedCiphertext:
    version: int
    key_id: str
    header: bytes
    nonce: bytes
    body: bytes


def data_key_id(key_version: int) -> str:
    return f"dek-v{key_version}"


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _header(key_id: str) -> bytes:
    raw_id = key_id.encode("ascii")
    if not 0 < len(raw_id) <= MAX_KEY_ID_BYTES:
        raise ValueError("key id length out of range")
    return MAGIC + bytes([FORMAT_VERSION, len(raw_id)]) + raw_id


def encrypt_field(
    data_key: bytes, key_id: str, context: FieldContext, subject_id: str, plaintext: bytes
) -> bytes:
    header = _header(key_id)
    nonce = os.urandom(NONCE_BYTES)
    aad = header + b"\x00" + context.associated_data(subject_id)
    return header + nonce + AESGCM(data_key).encrypt(nonce, plaintext, aad)


def parse_ciphertext(ciphertext: bytes) -> ParsedCiphertext:
    if len(ciphertext) < len(MAGIC) + 2 or not ciphertext.startswith(MAGIC):
        raise CiphertextError("not a field ciphertext")
    version, id_len = ciphertext[3], ciphertext[4]
    if version != FORMAT_VERSION:
        raise CiphertextError("unknown ciphertext format version")
    header_end = 5 + id_len
    if id_len == 0 or len(ciphertext) < header_end + NONCE_BYTES + 16:
        raise CiphertextError("truncated ciphertext")
    try:
        key_id = ciphertext[5:header_end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise CiphertextError("malformed key id") from exc
    return ParsedCiphertext(
        version,
        key_id,
        ciphertext[:header_end],
        ciphertext[header_end : header_end + NONCE_BYTES],
        ciphertext[header_end + NONCE_BYTES :],
    )


def decrypt_field(
    data_key: bytes, context: FieldContext, subject_id: str, parsed: ParsedCiphertext
) -> bytes:
    aad = parsed.header + b"\x00" + context.associated_data(subject_id)
    try:
        return AESGCM(data_key).decrypt(parsed.nonce, parsed.body, aad)
    except InvalidTag as exc:
        raise CiphertextError("ciphertext does not authenticate in this context") from exc


def _wrap_aad(subject_id: str, key_version: int, kek_id: str) -> bytes:
    return f"data-key/{subject_id}/{key_version}/{kek_id}".encode()


def wrap_data_key(
    kek: bytes, kek_id: str, subject_id: str, key_version: int, data_key: bytes
) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    aad = _wrap_aad(subject_id, key_version, kek_id)
    return nonce + AESGCM(kek).encrypt(nonce, data_key, aad)


def unwrap_data_key(
    kek: bytes, kek_id: str, subject_id: str, key_version: int, wrapped: bytes
) -> bytes:
    aad = _wrap_aad(subject_id, key_version, kek_id)
    try:
        return AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise CiphertextError("wrapped data key does not authenticate") from exc


def blind_index(index_key: bytes, context: str, normalised_value: bytes) -> bytes:
    """HMAC-SHA256 with domain separation, so equal values in different fields differ."""
    return hmac.new(
        index_key, context.encode() + b"\x00" + normalised_value, hashlib.sha256
    ).digest()
