"""Key-encryption keys and the blind-index key: file and environment providers."""

from __future__ import annotations

import base64
import errno
import json
import os
import stat
from pathlib import Path

import pytest

from services.privacy import keyring
from services.privacy.keyring import KeyRingError, load_index_key, load_keyring


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def env_keyring(*ids: str, primary: str | None = None) -> str:
    keys = [
        {"id": kek_id, "key": base64.b64encode(os.urandom(32)).decode(), "created_at": n}
        for n, kek_id in enumerate(ids)
    ]
    return json.dumps({"primary": primary or ids[-1], "keys": keys})


def rotate(ring: keyring.KeyRing) -> tuple[keyring.Kek, keyring.Kek]:
    """What a rotation does to the ring: add a key, then make it primary."""
    new = ring.add_key()
    previous = ring.primary  # add_key re-read the file
    assert ring.make_primary(new.kek_id, only_if_primary=previous.kek_id)
    return previous, new


def test_file_key_ring_is_created_owner_only(tmp_path: Path) -> None:
    keys_dir = tmp_path / "data" / "keys"
    ring = load_keyring(keys_dir)
    path = keys_dir / keyring.KEYRING_FILE
    assert ring.provider == "file"
    assert path.is_file()
    assert mode_of(path) == 0o600
    assert mode_of(keys_dir) == 0o700
    assert len(ring.primary.key) == keyring.KEK_BYTES
    assert ring.primary.kek_id.startswith("kek-")
    assert [k.kek_id for k in ring.all_keys()] == [ring.primary.kek_id]


def test_file_key_ring_is_reused_on_reload(tmp_path: Path) -> None:
    first = load_keyring(tmp_path)
    second = load_keyring(tmp_path)
    assert second.primary == first.primary
    first.reload()
    assert first.primary == second.primary


def test_rotate_keeps_old_keys_and_changes_primary(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path)
    original = ring.primary
    previous, new = rotate(ring)
    assert previous == original
    assert new.kek_id != original.kek_id
    assert new.key != original.key
    assert ring.primary == new
    assert ring.get(original.kek_id) == original
    assert {k.kek_id for k in ring.all_keys()} == {original.kek_id, new.kek_id}
    assert ring.all_keys()[0] == new  # newest first

    path = tmp_path / keyring.KEYRING_FILE
    assert mode_of(path) == 0o600  # replaced atomically, still owner only
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    reloaded = load_keyring(tmp_path)
    assert reloaded.primary == new
    assert reloaded.get(original.kek_id) == original

    _, third = rotate(ring)
    assert {k.kek_id for k in load_keyring(tmp_path).all_keys()} == {
        original.kek_id,
        new.kek_id,
        third.kek_id,
    }


def test_get_reloads_keys_rotated_by_another_replica(tmp_path: Path) -> None:
    ours = load_keyring(tmp_path)
    theirs = load_keyring(tmp_path)
    _, new = rotate(theirs)
    assert ours.get(new.kek_id) == new


def test_unknown_kek_is_an_error(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path)
    with pytest.raises(KeyRingError):
        ring.get("kek-unknown")


def test_env_key_ring_is_read_only(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    ring = load_keyring(keys_dir, env_keyring("kek-old", "kek-new"))
    assert ring.provider == "env"
    assert ring.primary.kek_id == "kek-new"
    assert ring.get("kek-old").kek_id == "kek-old"
    assert [k.kek_id for k in ring.all_keys()] == ["kek-new", "kek-old"]
    with pytest.raises(KeyRingError, match="read-only"):
        ring.add_key()
    with pytest.raises(KeyRingError, match="read-only"):
        ring.make_primary("kek-old")
    assert ring.primary.kek_id == "kek-new"
    assert not keys_dir.exists()  # nothing written when the environment provides the keys
    with pytest.raises(KeyRingError):
        ring.get("kek-unknown")


def test_env_key_ring_takes_precedence_over_a_key_file(tmp_path: Path) -> None:
    load_keyring(tmp_path)
    ring = load_keyring(tmp_path, env_keyring("kek-env"))
    assert ring.provider == "env"
    assert ring.primary.kek_id == "kek-env"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "not json",
        "[]",
        "{}",
        json.dumps({"primary": "a"}),
        json.dumps({"keys": []}),
        json.dumps({"primary": "a", "keys": []}),  # primary missing from the keys
        json.dumps({"primary": "a", "keys": [{"id": "a"}]}),  # no key material
        json.dumps({"primary": "a", "keys": [{"id": "a", "key": "c2hvcnQ="}]}),  # 5 bytes
        json.dumps({"primary": "a", "keys": [{"id": "a", "key": "%%%"}]}),
        json.dumps({"primary": "a", "keys": [{"id": "a", "key": "abc"}]}),  # bad padding
        json.dumps({"primary": "a", "keys": "a"}),
    ],
)
def test_malformed_key_ring_is_rejected(tmp_path: Path, raw: str) -> None:
    (tmp_path / keyring.KEYRING_FILE).write_text(raw)
    with pytest.raises(KeyRingError):
        load_keyring(tmp_path)
    if raw:  # an empty variable means "not set": the file provider is used instead
        with pytest.raises(KeyRingError):
            load_keyring(tmp_path / "other", raw)


def test_key_of_wrong_size_is_rejected(tmp_path: Path) -> None:
    raw = json.dumps(
        {"primary": "a", "keys": [{"id": "a", "key": base64.b64encode(os.urandom(16)).decode()}]}
    )
    with pytest.raises(KeyRingError):
        load_keyring(tmp_path, raw)


def test_blind_index_key_file_is_owner_only_and_stable(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    key = load_index_key(keys_dir)
    path = keys_dir / keyring.INDEX_KEY_FILE
    assert mode_of(path) == 0o600
    assert mode_of(keys_dir) == 0o700
    assert len(key.key) == keyring.INDEX_KEY_BYTES
    assert key.key_id.startswith("bik-")
    assert load_index_key(keys_dir) == key


def test_blind_index_key_is_separate_from_the_encryption_keys(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path)
    index_key = load_index_key(tmp_path)
    assert index_key.key not in {k.key for k in ring.all_keys()}
    assert (tmp_path / keyring.INDEX_KEY_FILE) != (tmp_path / keyring.KEYRING_FILE)


def test_blind_index_key_from_the_environment(tmp_path: Path) -> None:
    raw = os.urandom(32)
    encoded = base64.b64encode(raw).decode()
    load_index_key(tmp_path)  # a key file exists, the environment still wins
    key = load_index_key(tmp_path, encoded)
    assert key.key == raw
    assert load_index_key(tmp_path / "elsewhere", encoded) == key
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("value", ["c2hvcnQ=", "abc", "!!!!", base64.b64encode(b"x" * 33).decode()])
def test_malformed_blind_index_key_is_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(KeyRingError):
        load_index_key(tmp_path, value)
    (tmp_path / keyring.INDEX_KEY_FILE).write_text(value)
    with pytest.raises(KeyRingError):
        load_index_key(tmp_path)


def test_rotation_by_a_replica_with_a_stale_view_keeps_every_key(tmp_path: Path) -> None:
    ours = load_keyring(tmp_path)
    theirs = load_keyring(tmp_path)
    original = ours.primary
    _, their_new = rotate(theirs)
    previous, our_new = rotate(ours)  # ours never saw their rotation
    assert previous == their_new
    ring = load_keyring(tmp_path)
    assert {k.kek_id for k in ring.all_keys()} == {
        original.kek_id,
        their_new.kek_id,
        our_new.kek_id,
    }
    assert ring.primary == our_new


def test_reload_picks_up_a_rotation_elsewhere(tmp_path: Path) -> None:
    ours = load_keyring(tmp_path)
    _, new = rotate(load_keyring(tmp_path))
    ours.reload()
    assert ours.primary == new


def test_an_added_key_is_not_primary_until_made_primary(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path)
    original = ring.primary
    new = ring.add_key()
    assert ring.primary == original
    on_disk = load_keyring(tmp_path)
    assert on_disk.primary == original
    assert on_disk.get(new.kek_id) == new  # there to unwrap, unused for wrapping
    assert ring.make_primary(new.kek_id, only_if_primary=original.kek_id)
    assert ring.primary == new
    assert load_keyring(tmp_path).primary == new
    assert ring.make_primary(new.kek_id, only_if_primary=original.kek_id)  # repeat: no-op
    assert mode_of(tmp_path / keyring.KEYRING_FILE) == 0o600


def test_make_primary_refuses_when_the_primary_moved_on(tmp_path: Path) -> None:
    ours = load_keyring(tmp_path)
    original = ours.primary
    our_new = ours.add_key()
    _, their_new = rotate(load_keyring(tmp_path))
    assert not ours.make_primary(our_new.kek_id, only_if_primary=original.kek_id)
    assert ours.primary == their_new  # and the in-memory view follows the file
    ring = load_keyring(tmp_path)
    assert ring.primary == their_new
    assert {k.kek_id for k in ring.all_keys()} == {
        original.kek_id,
        our_new.kek_id,
        their_new.kek_id,
    }


def test_make_primary_of_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    ring = load_keyring(tmp_path)
    original = ring.primary
    with pytest.raises(KeyRingError):
        ring.make_primary("kek-unknown")
    assert load_keyring(tmp_path).primary == original


def test_add_key_keeps_keys_another_replica_added(tmp_path: Path) -> None:
    ours = load_keyring(tmp_path)
    theirs = load_keyring(tmp_path).add_key()
    mine = ours.add_key()  # ours never saw their key
    ring = load_keyring(tmp_path)
    assert {theirs.kek_id, mine.kek_id} <= {k.kek_id for k in ring.all_keys()}


def break_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "no space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)


def test_a_failed_first_run_leaves_no_partial_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty or half-written key file would make every later start fail."""
    with monkeypatch.context() as patch:
        break_fsync(patch)
        with pytest.raises(OSError):
            load_keyring(tmp_path)
        with pytest.raises(OSError):
            load_index_key(tmp_path)
    assert list(tmp_path.iterdir()) == []
    ring = load_keyring(tmp_path)
    index_key = load_index_key(tmp_path)
    assert load_keyring(tmp_path).primary == ring.primary
    assert load_index_key(tmp_path) == index_key


def test_a_failed_key_ring_change_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = load_keyring(tmp_path)
    before = (tmp_path / keyring.KEYRING_FILE).read_bytes()
    with monkeypatch.context() as patch:
        break_fsync(patch)
        with pytest.raises(OSError):
            ring.add_key()
    assert (tmp_path / keyring.KEYRING_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [keyring.KEYRING_FILE]


def test_env_key_ring_answers_make_primary_when_nothing_would_change() -> None:
    ring = load_keyring(Path("/nonexistent"), env_keyring("kek-a", "kek-b"))
    assert ring.make_primary("kek-b")  # already primary
    assert not ring.make_primary("kek-a", only_if_primary="kek-other")
    assert ring.primary.kek_id == "kek-b"
