"""Caller tokens: short-lived Ed25519-signed JWTs naming subject, role, scopes and expiry."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from services.runtime import secret_files
from services.runtime.access import ROLE_SCOPES

MAX_TOKEN_TTL_S = 24 * 3600
TOKEN_LEEWAY_S = 5
MAX_CLAIM_LEN = 128
VERIFIED_CACHE_SIZE = 10_000
SIGNING_KEY_FILE = "caller-token-ed25519.pem"
ALGORITHM = "EdDSA"


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or for another audience."""


@dataclass(frozen=True)
class Caller:
    subject: str
    role: str
    scopes: frozenset[str]
    token_id: str

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:9]).decode()


class TokenSigner:
    def __init__(self, private_key: Ed25519PrivateKey, audience: str, issuer: str) -> None:
        self._key = private_key
        self._kid = key_id(private_key.public_key())
        self._audience = audience
        self._issuer = issuer

    def mint(self, subject: str, role: str, ttl_s: int) -> str:
        if role not in ROLE_SCOPES:
            raise ValueError(f"unknown role {role!r}; known: {', '.join(sorted(ROLE_SCOPES))}")
        if not _is_short_text(subject):
            raise ValueError(f"subject must be 1-{MAX_CLAIM_LEN} printable characters")
        if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
            raise ValueError(f"ttl must be between 1 and {MAX_TOKEN_TTL_S} seconds")
        now = int(time.time())
        claims = {
            "iss": self._issuer,
            "sub": subject,
            "aud": self._audience,
            "iat": now,
            "exp": now + ttl_s,
            "jti": uuid.uuid4().hex,
            "role": role,
            "scope": " ".join(sorted(ROLE_SCOPES[role])),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})


class TokenVerifier:
    """Verifies caller tokens; remembers the ones it verified until they expire, since a
    caller sends the same token on every call and a signature check costs more than the
    rest of a small RPC's overhead."""

    def __init__(self, public_keys: list[Ed25519PublicKey], audience: str) -> None:
        self._keys = {key_id(k): k for k in public_keys}
        self._audience = audience
        self._verified: OrderedDict[str, tuple[Caller, float]] = OrderedDict()

    def verify(self, token: str) -> Caller:
        cached = self._verified.get(token)
        if cached is not None and time.time() < cached[1]:
            self._verified.move_to_end(token)
            return cached[0]
        caller, expires_at = self._verify_signed(token)
        self._verified[token] = (caller, expires_at)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return caller

    def _verify_signed(self, token: str) -> tuple[Caller, float]:
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(str(header.get("kid", "")))
            if key is None:
                raise InvalidToken("unknown signing key")
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                leeway=TOKEN_LEEWAY_S,
                options={"require": ["exp", "iat", "sub", "aud", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("token is for another audience") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token invalid") from exc
        return _caller_from(claims), float(claims["exp"])


def _is_short_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_LEN and value.isprintable()


def _caller_from(claims: dict[str, Any]) -> Caller:
    role, subject, token_id = claims["role"], claims["sub"], claims.get("jti", "-")
    if not isinstance(role, str) or role not in ROLE_SCOPES:
        raise InvalidToken("unknown role")
    # subjects reach audit entries and logs: bounded, printable text only
    if not _is_short_text(subject) or not _is_short_text(token_id):
        raise InvalidToken("malformed subject or token id")
    lifetime_s = claims["exp"] - claims["iat"]
    if not isinstance(lifetime_s, int | float) or lifetime_s > MAX_TOKEN_TTL_S:
        raise InvalidToken("token lifetime exceeds the maximum")
    # a token may narrow its role's scopes, never widen them
    scopes = frozenset(str(claims.get("scope", "")).split()) & ROLE_SCOPES[role]
    return Caller(subject, role, scopes, token_id)


def load_or_create_signing_key(keys_dir: Path) -> Ed25519PrivateKey:
    """The local suite's token signing key; created with 0600 permissions on first use."""
    path = keys_dir / SIGNING_KEY_FILE
    if not path.exists():
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # another process may have created it first: then theirs is kept and used
        secret_files.create_if_absent(path, pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidToken(f"{path} is not an Ed25519 private key")
    return key


def load_verify_keys(keys_dir: Path, pems: str = "") -> list[Ed25519PublicKey]:
    """Trusted token keys: `pems` (PEM blocks, `MEMBERSHIP_TOKEN_PUBLIC_KEYS` through the
    settings) or the local key."""
    if pems:
        keys = []
        for block in pems.split("-----END PUBLIC KEY-----"):
            if block.strip():
                key = serialization.load_pem_public_key(
                    (block.strip() + "\n-----END PUBLIC KEY-----\n").encode()
                )
                if isinstance(key, Ed25519PublicKey):
                    keys.append(key)
        return keys
    return [load_or_create_signing_key(keys_dir).public_key()]
