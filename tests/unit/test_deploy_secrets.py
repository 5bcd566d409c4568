"""The local overlay's secret generator (deploy/k8s/overlays/local/make_secrets.py) writes
what the suite's own loaders accept, never replaces a key, and nothing under deploy/ that
git tracks holds a key."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.webhooks import load_secrets_file
from services.privacy import settings as privacy_settings
from services.privacy.keyring import load_index_key, load_keyring
from services.runtime.config import load_settings
from services.runtime.identity import load_or_create_signing_key, load_verify_keys
from tests.support.deploy_k8s import DEPLOY, LOCAL_SECRETS, load_make_secrets


@pytest.fixture(scope="module")
def make_secrets() -> Any:
    return load_make_secrets()


@pytest.fixture
def secrets_dir(tmp_path: Path, make_secrets: Any) -> Path:
    out = tmp_path / "secrets"
    make_secrets.write_all(out)
    return out


def read(folder: Path, name: str) -> str:
    return (folder / name).read_text()


def test_the_files_are_owner_only(secrets_dir: Path) -> None:
    files = sorted(secrets_dir.iterdir())
    assert len(files) == 6
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_privacy_accepts_the_key_ring_and_the_index_key(secrets_dir: Path) -> None:
    env = {
        "MEMBERSHIP_KEK_KEYRING": read(secrets_dir, "kek-keyring.json"),
        "MEMBERSHIP_BLIND_INDEX_KEY": read(secrets_dir, "blind-index.key"),
    }
    keys_dir = secrets_dir / "unused"
    keys = privacy_settings.load(load_settings(env)).keys
    ring = load_keyring(keys_dir, keys.keyring_json)
    assert ring.provider == "env" and len(ring.primary.key) == 32
    assert len(load_index_key(keys_dir, keys.index_key).key) == 32
    assert not keys_dir.exists()  # read from the environment, nothing written


def test_services_trust_the_key_the_minters_sign_with(secrets_dir: Path) -> None:
    env = {"MEMBERSHIP_TOKEN_PUBLIC_KEYS": read(secrets_dir, "token-public-keys.pem")}
    settings = load_settings(env)
    (trusted,) = load_verify_keys(secrets_dir / "unused", settings.token_public_keys)
    signing = load_or_create_signing_key(secrets_dir)  # reads caller-token-ed25519.pem
    raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert trusted.public_bytes(*raw) == signing.public_key().public_bytes(*raw)


def test_the_gateway_accepts_the_webhook_secrets(secrets_dir: Path) -> None:
    assert set(load_secrets_file(secrets_dir / "webhook-secrets.json")) == {"settlement-local"}


def test_the_database_credentials_are_env_lines(secrets_dir: Path) -> None:
    lines = dict(line.split("=", 1) for line in read(secrets_dir, "database.env").splitlines())
    assert lines["PGUSER"] == "membership"
    assert len(lines["PGPASSWORD"]) == 48 and lines["PGPASSWORD"].isalnum()


def test_existing_keys_are_never_replaced(secrets_dir: Path, make_secrets: Any) -> None:
    before = {p.name: p.read_bytes() for p in secrets_dir.iterdir()}
    with pytest.raises(FileExistsError):
        make_secrets.write_all(secrets_dir)
    assert {p.name: p.read_bytes() for p in secrets_dir.iterdir()} == before
    assert make_secrets.main(["--out", str(secrets_dir)]) == 1


def test_no_committed_deploy_file_holds_a_key() -> None:
    for path in DEPLOY.rglob("*"):
        if not path.is_file() or LOCAL_SECRETS in path.parents:
            continue
        assert b"PRIVATE KEY-----" not in path.read_bytes(), path
