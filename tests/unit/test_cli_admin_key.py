"""What `membership run` prints about the admin API key: the bootstrap key the first time,
and on every later start (the key is never shown again) how to make one."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from membership_cli import launcher
from membership_cli.main import build_parser

KEY = "wm_abc_secret"


def announced(tmp_path: Path, data_dir: Path, admin_key: str | None, as_json: bool) -> None:
    db = launcher.Database("postgresql://localhost/membership", embedded=True)
    launcher.announce([], db, tmp_path / "keys", data_dir, as_json, admin_key)


def printed(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_the_first_start_prints_the_bootstrap_key_and_no_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    announced(tmp_path, tmp_path / "data", KEY, as_json=False)
    lines = printed(capsys)
    assert any(KEY in line and "shown once" in line for line in lines)
    assert not any("apikey create" in line for line in lines)


def test_a_later_start_says_how_to_make_an_admin_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = (tmp_path / "data").resolve()
    announced(tmp_path, data_dir, None, as_json=False)
    [hint] = [line for line in printed(capsys) if "apikey create" in line]
    command = hint.split("?", 1)[1].strip()
    assert command.startswith("membership apikey create --role admin --name ")
    # the command works as printed: it parses, for this suite's data dir
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.role, Path(args.data_dir)) == ("admin", data_dir)


def test_the_default_data_dir_is_not_spelled_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    default = (tmp_path / launcher.DEFAULT_DATA_DIR).resolve()
    assert "--data-dir" not in launcher.admin_key_command(default)
    assert launcher.admin_key_lines(None, default) == [
        f"Need an admin API key?  {launcher.admin_key_command(default)}"
    ]


def test_the_json_summary_carries_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = (tmp_path / "data").resolve()
    announced(tmp_path, data_dir, None, as_json=True)
    summary = json.loads(capsys.readouterr().out)
    assert summary["bootstrap_admin_key"] is None
    assert summary["admin_key_command"] == launcher.admin_key_command(data_dir)
