"""Owner-only secret files: created once, atomically, never seen half-written."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from services.runtime import secret_files
from services.runtime.identity import SIGNING_KEY_FILE, load_or_create_signing_key


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def break_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulates a full disk (or a crash) after the data was handed to the kernel."""

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "no space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)


def test_create_if_absent_writes_an_owner_only_file(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.key"
    secret_files.create_if_absent(path, b"s3cret")
    assert path.read_bytes() == b"s3cret"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_create_if_absent_keeps_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"theirs")
    secret_files.create_if_absent(path, b"ours")
    assert path.read_bytes() == b"theirs"
    assert list(tmp_path.iterdir()) == [path]


def test_create_if_absent_publishes_the_name_only_once_the_content_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.key"
    seen: list[tuple[bytes, int, bool]] = []
    real_link = os.link

    def spying_link(src: Path, dst: Path) -> None:
        seen.append((Path(src).read_bytes(), mode_of(Path(src)), Path(dst).exists()))
        real_link(src, dst)

    monkeypatch.setattr(os, "link", spying_link)
    secret_files.create_if_absent(path, b"complete")
    assert seen == [(b"complete", 0o600, False)]
    assert path.read_bytes() == b"complete"


def test_concurrent_creators_agree_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    payloads = [bytes([i]) * 4096 for i in range(8)]
    threads = [
        threading.Thread(target=secret_files.create_if_absent, args=(path, p)) for p in payloads
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_bytes() in payloads
    assert list(tmp_path.iterdir()) == [path]


def test_a_failed_write_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret.key"
    break_fsync(monkeypatch)
    with pytest.raises(OSError):
        secret_files.create_if_absent(path, b"data")
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"old")
    with pytest.raises(OSError):
        secret_files.replace(path, b"new")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]


def test_replace_swaps_the_content_and_keeps_it_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    secret_files.create_if_absent(path, b"one")
    secret_files.replace(path, b"two")
    assert path.read_bytes() == b"two"
    assert mode_of(path) == 0o600
    assert list(tmp_path.iterdir()) == [path]


def test_signing_key_is_not_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty key file left by a failed first run would break every later start."""
    with monkeypatch.context() as patch:
        break_fsync(patch)
        with pytest.raises(OSError):
            load_or_create_signing_key(tmp_path)
    assert not (tmp_path / SIGNING_KEY_FILE).exists()
    first = raw_public(load_or_create_signing_key(tmp_path))
    assert mode_of(tmp_path / SIGNING_KEY_FILE) == 0o600
    assert raw_public(load_or_create_signing_key(tmp_path)) == first
    assert [p.name for p in tmp_path.iterdir()] == [SIGNING_KEY_FILE]
