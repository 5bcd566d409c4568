"""`membership token`: caller tokens for operators and local testing."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import jwt

from membership_cli.errors import usage_error
from services.runtime.access import ROLE_SCOPES
from services.runtime.identity import (
    MAX_CLAIM_LEN,
    MAX_TOKEN_TTL_S,
    SIGNING_KEY_FILE,
    TokenSigner,
    load_or_create_signing_key,
)

ISSUER = "membership-cli"
DEFAULT_TTL_S = 3600
INTERNAL_ROLE_PREFIX = "service:"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    role: str
    subject: str
    scopes: list[str]
    expires_at: int


def default_subject(role: str) -> str:
    return f"cli:{role}"


def check_request(role: str, ttl_s: int, subject: str = "", internal: bool = False) -> None:
    if role not in ROLE_SCOPES:
        known = ", ".join(sorted(ROLE_SCOPES))
        raise usage_error(f"unknown role {role!r}; roles: {known}")
    if role.startswith(INTERNAL_ROLE_PREFIX) and not internal:
        # a service identity skips the checks made for people (purpose, read_pii scope)
        raise usage_error(f"{role} is a service identity; pass --internal to mint it anyway")
    if not 1 <= ttl_s <= MAX_TOKEN_TTL_S:
        raise usage_error(f"--ttl-s must be between 1 and {MAX_TOKEN_TTL_S}")
    if subject and not (len(subject) <= MAX_CLAIM_LEN and subject.isprintable()):
        raise usage_error(f"--subject must be 1-{MAX_CLAIM_LEN} printable characters")


def mint(
    role: str, ttl_s: int, subject: str, keys_dir: Path, audience: str, internal: bool = False
) -> IssuedToken:
    check_request(role, ttl_s, subject, internal)
    if not (keys_dir / SIGNING_KEY_FILE).exists():
        # a fresh key is trusted only by services started with this same keys directory
        print(f"membership: note: created a new signing key in {keys_dir}", file=sys.stderr)
    signer = TokenSigner(load_or_create_signing_key(keys_dir), audience, ISSUER)
    token = signer.mint(subject, role, ttl_s)
    # read back rather than recompute, so the reported expiry is exactly the signed one
    claims = jwt.decode(token, options={"verify_signature": False})
    return IssuedToken(token, role, subject, sorted(ROLE_SCOPES[role]), int(claims["exp"]))
