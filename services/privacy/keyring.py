"""Key-encryption keys and the blind-index key, kept outside PostgreSQL.

Providers: a local key-ring file under the keys folder (created on first run, mode 0600), or
read-only variables for deployments that inject secrets (settings.KeySources). A KMS or Vault
provider would implement the same `KeyRing` interface.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.privacy.settings import KEYRING_ENV
from services.runtime import secret_files

KEK_BYTES = 32
INDEX_KEY_BYTES = 32
KEYRING_FILE = "kek-keyring.json"
INDEX_KEY_FILE = "blind-index.key"


class KeyRingError(RuntimeError):
    """The key ring is unreadable, lacks a key, or cannot be changed."""


@dataclass(frozen=True)
class Kek:
    kek_id: str
    key: bytes
    created_at: float


def _new_kek_id() -> str:
    return "kek-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _decode_keyring(raw: str) -> tuple[str, dict[str, Kek]]:
    try:
        doc = json.loads(raw)
        keys = {
            k["id"]: Kek(k["id"], base64.b64decode(k["key"]), float(k.get("created_at", 0)))
            for k in doc["keys"]
        }
        primary = str(doc["primary"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyRingError("key ring is malformed") from exc
    if primary not in keys or any(len(k.key) != KEK_BYTES for k in keys.values()):
        raise KeyRingError("key ring lacks its primary key or has a key of the wrong size")
    return primary, keys


def _encode_keyring(primary: str, keys: Mapping[str, Kek]) -> str:
    return json.dumps(
        {
            "primary": primary,
            "keys": [
                {
                    "id": k.kek_id,
                    "key": base64.b64encode(k.key).decode(),
                    "created_at": k.created_at,
                }
                for k in keys.values()
            ],
        },
        indent=2,
    )


class KeyRing:
    """The key-encryption keys: one primary for wrapping, all of them for unwrapping.

    File changes re-read the file first; replicas sharing it serialise their rotations with a
    database lock (see FieldCrypto.rotate), and the thread lock covers this process.
    """

    def __init__(self, provider: str, path: Path | None, primary: str, keys: dict[str, Kek]):
        self.provider = provider
        self._path = path
        self._primary = primary
        self._keys = keys
        self._lock = threading.Lock()

    @property
    def primary(self) -> Kek:
        return self._keys[self._primary]

    def all_keys(self) -> list[Kek]:
        return sorted(self._keys.values(), key=lambda k: k.created_at, reverse=True)

    def get(self, kek_id: str) -> Kek:
        kek = self._keys.get(kek_id)
        if kek is None and self._path is not None:
            # another replica may have rotated: the file is the source of truth
            self.reload()
            kek = self._keys.get(kek_id)
        if kek is None:
            raise KeyRingError(f"key-encryption key {kek_id} is not in the key ring")
        return kek

    def reload(self) -> None:
        if self._path is not None:
            with self._lock:
                self._primary, self._keys = _decode_keyring(self._path.read_text())

    def _writable_path(self) -> Path:
        if self._path is None:
            raise KeyRingError(
                f"the {self.provider} key ring is read-only: add a key to {KEYRING_ENV}, "
                "make it primary and restart"
            )
        return self._path

    def add_key(self) -> Kek:
        """Adds a new key that is NOT primary yet: harmless until `make_primary`, so a
        rotation can record it in the database before anything wraps with it."""
        path = self._writable_path()
        new = Kek(_new_kek_id(), secrets.token_bytes(KEK_BYTES), time.time())
        with self._lock:
            # another replica may have changed the file since we loaded: never drop its keys
            primary, keys = _decode_keyring(path.read_text())
            keys = {**keys, new.kek_id: new}
            secret_files.replace(path, _encode_keyring(primary, keys).encode())
            self._primary, self._keys = primary, keys
        return new

    def make_primary(self, kek_id: str, only_if_primary: str | None = None) -> bool:
        """Makes a key of the ring primary. With `only_if_primary`, only while that key is
        still the primary (compare-and-set on the file); returns whether `kek_id` is primary."""
        with self._lock:
            if self._path is not None:
                # another replica may have changed the file: decide on what it holds now
                self._primary, self._keys = _decode_keyring(self._path.read_text())
            if self._primary == kek_id:
                return True
            if only_if_primary is not None and self._primary != only_if_primary:
                return False
            if kek_id not in self._keys:
                raise KeyRingError(f"key-encryption key {kek_id} is not in the key ring")
            path = self._writable_path()
            secret_files.replace(path, _encode_keyring(kek_id, self._keys).encode())
            self._primary = kek_id
        return True


def load_keyring(keys_dir: Path, keyring_json: str = "") -> KeyRing:
    """The ring given as JSON (MEMBERSHIP_KEK_KEYRING; read-only), else the file in
    `keys_dir`, created with one key on first use."""
    if keyring_json:
        primary, keys = _decode_keyring(keyring_json)
        return KeyRing("env", None, primary, keys)
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = keys_dir / KEYRING_FILE
    if not path.exists():
        first = Kek(_new_kek_id(), secrets.token_bytes(KEK_BYTES), time.time())
        # another replica may create it concurrently: then theirs is kept and read below
        secret_files.create_if_absent(
            path, _encode_keyring(first.kek_id, {first.kek_id: first}).encode()
        )
    primary, keys = _decode_keyring(path.read_text())
    return KeyRing("file", path, primary, keys)


@dataclass(frozen=True)
class IndexKey:
    key_id: str
    key: bytes


def load_index_key(keys_dir: Path, index_key: str = "") -> IndexKey:
    """The blind-index HMAC key: separate from every encryption key. Given in base64
    (MEMBERSHIP_BLIND_INDEX_KEY), else the file in `keys_dir`, created on first use."""
    encoded: bytes | str
    if index_key:
        encoded = index_key
    else:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = keys_dir / INDEX_KEY_FILE
        if not path.exists():
            secret_files.create_if_absent(
                path, base64.b64encode(secrets.token_bytes(INDEX_KEY_BYTES))
            )
        encoded = path.read_bytes()
    try:
        raw = base64.b64decode(encoded)
    except ValueError as exc:  # binascii.Error: not base64
        raise KeyRingError("blind-index key is not base64") from exc
    if len(raw) != INDEX_KEY_BYTES:
        raise KeyRingError("blind-index key must be 32 bytes")
    return IndexKey("bik-" + hashlib.sha256(raw).hexdigest()[:12], raw)
