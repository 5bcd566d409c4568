"""Envelope primitives: ciphertext format, tamper detection, associated data, key wrapping,
blind indexes."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from services.privacy.domain import envelope
from services.privacy.domain.envelope import CiphertextError, FieldContext

PHONE = FieldContext("accounts", "members", "phone")
EMAIL = FieldContext("accounts", "members", "email")
SUBJECT = "m-0001"
KEY_ID = envelope.data_key_id(1)
PLAINTEXT = b"+8613800138000"


def open_field(
    data_key: bytes, ciphertext: bytes, context: FieldContext = PHONE, subject: str = SUBJECT
) -> bytes:
    return envelope.decrypt_field(data_key, context, subject, envelope.parse_ciphertext(ciphertext))


@pytest.fixture
def data_key() -> bytes:
    return envelope.new_data_key()


def test_data_key_is_aes_256() -> None:
    assert len(envelope.new_data_key()) == 32
    assert envelope.new_data_key() != envelope.new_data_key()


def test_ciphertext_is_self_describing(data_key: bytes) -> None:
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    raw_id = KEY_ID.encode("ascii")
    assert ct[:3] == b"WMC" == envelope.MAGIC
    assert ct[3] == envelope.FORMAT_VERSION == 1
    assert ct[4] == len(raw_id)
    assert ct[5 : 5 + len(raw_id)] == raw_id
    # header | 12-byte nonce | ciphertext of the same length | 16-byte tag
    assert len(ct) == 5 + len(raw_id) + 12 + len(PLAINTEXT) + 16
    assert PLAINTEXT not in ct

    parsed = envelope.parse_ciphertext(ct)
    assert parsed.version == 1
    assert parsed.key_id == KEY_ID == "dek-v1"
    assert parsed.header == ct[: 5 + len(raw_id)]
    assert len(parsed.nonce) == envelope.NONCE_BYTES == 12
    assert parsed.body == ct[5 + len(raw_id) + 12 :]
    assert open_field(data_key, ct) == PLAINTEXT


def test_each_encryption_uses_a_fresh_nonce(data_key: bytes) -> None:
    first = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    second = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    assert first != second
    assert envelope.parse_ciphertext(first).nonce != envelope.parse_ciphertext(second).nonce
    assert open_field(data_key, first) == open_field(data_key, second) == PLAINTEXT


def test_empty_plaintext_round_trips(data_key: bytes) -> None:
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, b"")
    assert open_field(data_key, ct) == b""


def test_the_header_is_authenticated_not_only_the_body(data_key: bytes) -> None:
    """A ciphertext relabelled with another key id (same length) must not open."""
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    relabelled = ct.replace(b"dek-v1", b"dek-v2", 1)
    assert envelope.parse_ciphertext(relabelled).key_id == "dek-v2"
    with pytest.raises(CiphertextError):
        open_field(data_key, relabelled)


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_flipping_any_byte_is_detected(data_key: bytes, mask: int) -> None:
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    for i in range(len(ct)):
        tampered = bytearray(ct)
        tampered[i] ^= mask
        with pytest.raises(CiphertextError):
            open_field(data_key, bytes(tampered))


def test_truncated_or_extended_ciphertext_is_detected(data_key: bytes) -> None:
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    for cut in range(len(ct)):
        with pytest.raises(CiphertextError):
            open_field(data_key, ct[:cut])
    with pytest.raises(CiphertextError):
        open_field(data_key, ct + b"\x00")


@pytest.mark.parametrize(
    "garbage", [b"", b"W", b"WMC", b"WMC\x01", b"XYZ\x01\x06dek-v1" + b"\0" * 40]
)
def test_garbage_is_not_a_ciphertext(data_key: bytes, garbage: bytes) -> None:
    with pytest.raises(CiphertextError):
        open_field(data_key, garbage)


def test_zero_length_key_id_is_rejected() -> None:
    with pytest.raises(CiphertextError):
        envelope.parse_ciphertext(b"WMC\x01\x00" + b"\0" * 40)


def test_non_ascii_key_id_is_rejected() -> None:
    with pytest.raises(CiphertextError):
        envelope.parse_ciphertext(b"WMC\x01\x02\xff\xfe" + b"\0" * 40)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_format_version_is_rejected(data_key: bytes, version: int) -> None:
    ct = bytearray(envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT))
    ct[3] = version
    with pytest.raises(CiphertextError, match="version"):
        envelope.parse_ciphertext(bytes(ct))


def test_key_id_length_is_bounded(data_key: bytes) -> None:
    with pytest.raises(ValueError):
        envelope.encrypt_field(data_key, "", PHONE, SUBJECT, PLAINTEXT)
    with pytest.raises(ValueError):
        envelope.encrypt_field(data_key, "k" * 65, PHONE, SUBJECT, PLAINTEXT)
    ct = envelope.encrypt_field(data_key, "k" * 64, PHONE, SUBJECT, PLAINTEXT)
    assert envelope.parse_ciphertext(ct).key_id == "k" * 64


@pytest.mark.parametrize(
    ("context", "subject"),
    [
        (EMAIL, SUBJECT),  # another column
        (FieldContext("accounts", "members_archive", "phone"), SUBJECT),  # another table
        (FieldContext("points", "members", "phone"), SUBJECT),  # another service
        (PHONE, "m-0002"),  # another member's row
        (PHONE, SUBJECT + "0"),
        (FieldContext("accounts", "members/phone", "m-0001"), ""),
    ],
)
def test_associated_data_binds_context_and_subject(
    data_key: bytes, context: FieldContext, subject: str
) -> None:
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    with pytest.raises(CiphertextError):
        open_field(data_key, ct, context, subject)
    assert open_field(data_key, ct) == PLAINTEXT


def test_another_data_key_does_not_open(data_key: bytes) -> None:
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    with pytest.raises(CiphertextError):
        open_field(envelope.new_data_key(), ct)


def test_associated_data_names_service_table_column_and_subject() -> None:
    assert PHONE.associated_data("m-1") == b"accounts/members/phone/m-1"


def test_wrap_and_unwrap_data_key(data_key: bytes) -> None:
    kek = os.urandom(32)
    wrapped = envelope.wrap_data_key(kek, "kek-a", SUBJECT, 1, data_key)
    assert data_key not in wrapped
    assert len(wrapped) == 12 + 32 + 16
    assert envelope.unwrap_data_key(kek, "kek-a", SUBJECT, 1, wrapped) == data_key
    # fresh nonce per wrap
    assert envelope.wrap_data_key(kek, "kek-a", SUBJECT, 1, data_key) != wrapped


@pytest.mark.parametrize(
    ("kek_id", "subject", "version"),
    [("kek-b", SUBJECT, 1), ("kek-a", "m-0002", 1), ("kek-a", SUBJECT, 2)],
)
def test_wrapped_key_is_bound_to_subject_version_and_kek_id(
    data_key: bytes, kek_id: str, subject: str, version: int
) -> None:
    kek = os.urandom(32)
    wrapped = envelope.wrap_data_key(kek, "kek-a", SUBJECT, 1, data_key)
    with pytest.raises(CiphertextError):
        envelope.unwrap_data_key(kek, kek_id, subject, version, wrapped)


def test_wrapped_key_needs_the_right_kek_and_detects_tampering(data_key: bytes) -> None:
    kek = os.urandom(32)
    wrapped = envelope.wrap_data_key(kek, "kek-a", SUBJECT, 1, data_key)
    with pytest.raises(CiphertextError):
        envelope.unwrap_data_key(os.urandom(32), "kek-a", SUBJECT, 1, wrapped)
    for i in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[i] ^= 0x01
        with pytest.raises(CiphertextError):
            envelope.unwrap_data_key(kek, "kek-a", SUBJECT, 1, bytes(tampered))


def test_blind_index_is_deterministic_keyed_and_domain_separated() -> None:
    key = os.urandom(32)
    phone = b"+8613800138000"
    digest = envelope.blind_index(key, "accounts.members.phone", phone)
    assert len(digest) == 32
    assert digest == envelope.blind_index(key, "accounts.members.phone", phone)
    assert digest != envelope.blind_index(key, "accounts.members.email", phone)
    assert digest != envelope.blind_index(key, "accounts.members.phone", b"+8613800138001")
    assert digest != envelope.blind_index(os.urandom(32), "accounts.members.phone", phone)
    # the separator keeps (context, value) pairs from sliding into each other
    assert envelope.blind_index(key, "a.b", b"c") != envelope.blind_index(key, "a", b".bc")
    assert envelope.blind_index(key, "ab", b"") != envelope.blind_index(key, "a", b"b")


def test_blind_index_matches_hmac_sha256() -> None:
    import hashlib
    import hmac

    key = os.urandom(32)
    expected = hmac.new(key, b"ctx\x00value", hashlib.sha256).digest()
    assert envelope.blind_index(key, "ctx", b"value") == expected


def test_field_ciphertext_opens_with_plain_aes_gcm(data_key: bytes) -> None:
    """The format is documented enough to open with AES-GCM directly (no hidden state)."""
    ct = envelope.encrypt_field(data_key, KEY_ID, PHONE, SUBJECT, PLAINTEXT)
    parsed = envelope.parse_ciphertext(ct)
    aad = parsed.header + b"\x00" + b"accounts/members/phone/" + SUBJECT.encode()
    assert AESGCM(data_key).decrypt(parsed.nonce, parsed.body, aad) == PLAINTEXT


@settings(max_examples=50, deadline=None)
@given(
    plaintext=st.binary(max_size=512),
    subject=st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
    version=st.integers(min_value=1, max_value=10_000),
)
def test_round_trip_property(plaintext: bytes, subject: str, version: int) -> None:
    data_key = envelope.new_data_key()
    key_id = envelope.data_key_id(version)
    ct = envelope.encrypt_field(data_key, key_id, EMAIL, subject, plaintext)
    parsed = envelope.parse_ciphertext(ct)
    assert parsed.key_id == key_id
    assert envelope.decrypt_field(data_key, EMAIL, subject, parsed) == plaintext
    with pytest.raises(CiphertextError):
        envelope.decrypt_field(data_key, PHONE, subject, parsed)
