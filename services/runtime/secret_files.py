"""Owner-only secret files (keys) that readers only ever see complete.

Both helpers write the data to a temporary 0600 file in the same 0700 folder and fsync it
before the final name points at it, so a crash or a full disk never leaves an empty or
half-written key file behind, and a concurrent reader sees either no file or all of it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def _write_temp(path: Path, data: bytes) -> Path:
    """A synced 0600 temporary file next to `path` (same folder, so link/rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sync_dir(folder: Path) -> None:
    """Makes the new directory entry durable too (best effort: not every OS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def create_if_absent(path: Path, data: bytes) -> None:
    """Creates `path` with `data` unless it exists; an existing file (say, one another process
    created first) is kept as it is."""
    tmp = _write_temp(path, data)
    try:
        # link, unlike rename, fails when the target exists: the first creator wins
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
            _sync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def replace(path: Path, data: bytes) -> None:
    """Atomically replaces (or creates) `path` with `data`."""
    tmp = _write_temp(path, data)
    try:
        os.replace(tmp, path)
        _sync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
