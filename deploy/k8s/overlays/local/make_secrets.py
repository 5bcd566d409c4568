"""Makes the local overlay's secret files (git-ignored) in the formats the suite reads.

    python deploy/k8s/overlays/local/make_secrets.py [--out DIR]

Writes, mode 0600, into DIR (default: the `secrets/` folder beside this file):

    database.env               PGUSER / PGPASSWORD of the in-cluster PostgreSQL
    caller-token-ed25519.pem   the caller-token signing key (gateway, accounts, privacy)
    token-public-keys.pem      its public key (MEMBERSHIP_TOKEN_PUBLIC_KEYS, every service)
    kek-keyring.json           the key-encryption key ring (MEMBERSHIP_KEK_KEYRING, privacy)
    blind-index.key            the blind-index key (MEMBERSHIP_BLIND_INDEX_KEY, privacy)
    webhook-secrets.json       one settlement client's webhook secret (gateway)

Existing files are never replaced: a new key-encryption key would leave every member's
data unreadable, so the script refuses (exit 1) unless every file is absent. Production
keys come from the secret manager instead (see ../../base/secrets.template.yaml).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_BYTES = 32
FILE_MODE = 0o600
DEFAULT_OUT = Path(__file__).resolve().parent / "secrets"


def secret_files() -> dict[str, bytes]:
    """Every file's content, freshly generated."""
    signing = Ed25519PrivateKey.generate()
    kek_id = "kek-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-local"
    keyring = {
        "primary": kek_id,
        "keys": [
            {
                "id": kek_id,
                "key": base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode(),
                "created_at": time.time(),
            }
        ],
    }
    # hex: safe in any URL or shell quoting that a developer may paste it into
    password = secrets.token_hex(24)
    return {
        "database.env": f"PGUSER=membership\nPGPASSWORD={password}\n".encode(),
        "caller-token-ed25519.pem": signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "token-public-keys.pem": signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "kek-keyring.json": json.dumps(keyring).encode(),
        "blind-index.key": base64.b64encode(secrets.token_bytes(KEY_BYTES)),
        "webhook-secrets.json": json.dumps({"settlement-local": secrets.token_hex(32)}).encode(),
    }


def write_all(out: Path) -> list[Path]:
    files = secret_files()
    present = [out / name for name in files if (out / name).exists()]
    if present:
        names = ", ".join(p.name for p in present)
        raise FileExistsError(f"{out} already holds {names}: keys are never replaced here")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        path = out / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    try:
        written = write_all(args.out)
    except FileExistsError as exc:
        sys.stderr.write(f"make_secrets: {exc}\n")
        return 1
    sys.stderr.write(f"make_secrets: wrote {len(written)} files to {args.out}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
