"""Caller tokens: the verifier's memory of tokens it already verified."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime import identity
from services.runtime.identity import Caller, InvalidToken, TokenSigner, TokenVerifier


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    signer = TokenSigner(key, "aud", "tests")
    verifier = TokenVerifier([key.public_key()], "aud")
    checks: list[str] = []
    check = verifier._verify_signed

    def counted(token: str) -> tuple[Caller, float]:
        checks.append(token)
        return check(token)

    monkeypatch.setattr(verifier, "_verify_signed", counted)
    token = signer.mint("app:1", "wallet-backend", 60)
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert len(checks) == 1  # the second answer came from memory
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    verifier.verify(token)  # past its expiry the memory no longer answers
    assert len(checks) == 2


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "VERIFIED_CACHE_SIZE", 3)
    key = Ed25519PrivateKey.generate()
    signer = TokenSigner(key, "aud", "tests")
    verifier = TokenVerifier([key.public_key()], "aud")
    for i in range(10):
        verifier.verify(signer.mint(f"app:{i}", "wallet-backend", 60))
    assert len(verifier._verified) == 3


def test_a_refused_token_is_not_remembered() -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    verifier = TokenVerifier([key.public_key()], "aud")
    forged = TokenSigner(other, "aud", "tests").mint("app:1", "admin", 60)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verifier.verify(forged)
    assert len(verifier._verified) == 0
