"""The caller tokens the gateway forwards: one signature per API key and role for most of a
token's lifetime, never a token past it."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.caller_tokens import MAX_CACHED, REFRESH_S, TOKEN_TTL_S, CallerTokens
from services.runtime.identity import TokenSigner, TokenVerifier


class CountingSigner(TokenSigner):
    def __init__(self, key: Ed25519PrivateKey) -> None:
        super().__init__(key, "wallet-membership", "gateway")
        self.signed = 0

    def mint(self, subject: str, role: str, ttl_s: int) -> str:
        self.signed += 1
        return super().mint(subject, role, ttl_s)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def test_a_token_is_reused_until_shortly_before_it_expires(key: Ed25519PrivateKey) -> None:
    signer, clock = CountingSigner(key), Clock(1_000.0)
    tokens = CallerTokens(signer, clock)
    first = tokens.token("key:a", "settlement")
    clock.now += TOKEN_TTL_S - REFRESH_S - 1
    assert tokens.token("key:a", "settlement") == first
    assert signer.signed == 1
    # within REFRESH_S of its expiry a new one is signed, so none expires in flight
    clock.now += 1
    assert tokens.token("key:a", "settlement") != first
    assert signer.signed == 2


def test_each_key_and_role_has_its_own_token(key: Ed25519PrivateKey) -> None:
    signer = CountingSigner(key)
    tokens = CallerTokens(signer)
    seen = {
        tokens.token(subject, role)
        for subject in ("key:a", "key:b")
        for role in ("settlement", "wallet-backend")
    }
    assert len(seen) == 4 == signer.signed


def test_the_tokens_are_short_lived_and_verify_as_their_principal(key: Ed25519PrivateKey) -> None:
    token = CallerTokens(CountingSigner(key)).token("key:a", "settlement")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_S <= 600
    caller = TokenVerifier([key.public_key()], "wallet-membership").verify(token)
    assert (caller.subject, caller.role) == ("key:a", "settlement")


def test_a_token_for_an_unknown_role_is_never_made(key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        CallerTokens(CountingSigner(key)).token("key:a", "root")


def test_the_cache_is_bounded_and_forgets_the_least_recently_used(key: Ed25519PrivateKey) -> None:
    class Unsigned(CountingSigner):
        def mint(self, subject: str, role: str, ttl_s: int) -> str:
            self.signed += 1
            return f"{subject}/{role}/{self.signed}"

    signer = Unsigned(key)
    tokens = CallerTokens(signer)
    first = tokens.token("key:first", "settlement")
    for i in range(MAX_CACHED - 1):
        tokens.token(f"key:{i}", "settlement")
    assert tokens.token("key:first", "settlement") == first  # still cached, and now recent
    tokens.token("key:one-too-many", "settlement")
    assert tokens.token("key:0", "settlement") != "key:0/settlement/2"  # forgotten: re-signed
    assert tokens.token("key:first", "settlement") == first
