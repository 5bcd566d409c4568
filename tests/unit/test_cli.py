"""The `membership` command's own logic: exit codes, tokens, address checks, supervision.

The whole launcher with the real services is covered by tests/e2e; these pin the pieces
with stand-in child processes, fast.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from membership_cli import children as procs
from membership_cli import launcher
from membership_cli.embedded_pg import HANDLE_PIDS_FILE, forget_dead_handles
from membership_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError
from membership_cli.main import build_parser, main
from services.runtime.access import ROLE_SCOPES
from services.runtime.identity import TokenVerifier, load_or_create_signing_key

IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(60)"
)


def _free_addr() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def started() -> Iterator[list[procs.Child]]:
    """Stand-in children; any still running at the end are killed and reaped."""
    made: list[procs.Child] = []
    yield made
    procs.stop_all(made, grace_s=0)
    for child in made:
        if child.process.stdout is not None:
            child.process.stdout.close()


def _child(made: list[procs.Child], code: str, stdout: int | None = None) -> procs.Child:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=stdout)
    child = procs.Child("stand-in", _free_addr(), process)
    made.append(child)
    return child


def test_token_prints_a_token_the_services_accept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MEMBERSHIP_TOKEN_AUDIENCE", raising=False)
    code = main(["token", "--role", "admin", "--keys-dir", str(tmp_path), "--json"])
    assert code == EXIT_OK
    issued = json.loads(capsys.readouterr().out)
    assert issued["subject"] == "cli:admin"
    assert issued["scopes"] == sorted(ROLE_SCOPES["admin"])
    public_key = load_or_create_signing_key(tmp_path).public_key()
    verifier = TokenVerifier([public_key], "wallet-membership")
    caller = verifier.verify(issued["token"])
    assert (caller.role, caller.subject) == ("admin", "cli:admin")


def test_token_plain_output_is_only_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["token", "--role", "wallet-backend", "--subject", "app:ios", "--ttl-s", "60"]
    assert main([*args, "--keys-dir", str(tmp_path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.count(".") == 2  # header.claims.signature


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "root"], "roles: admin, marketing, officer"),
        (["--role", "admin", "--ttl-s", "0"], "--ttl-s must be between"),
        (["--role", "admin", "--ttl-s", "86401"], "--ttl-s must be between"),
        (["--role", "service:privacy"], "pass --internal"),
        (["--role", "admin", "--subject", "x" * 129], "--subject must be"),
    ],
)
def test_token_usage_errors_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["token", *args, "--keys-dir", str(tmp_path)]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""
    assert not any(tmp_path.iterdir()), "no key is created for a refused request"


def test_internal_roles_need_the_internal_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["token", "--role", "service:privacy", "--internal", "--keys-dir", str(tmp_path)]
    assert main(args) == EXIT_OK
    assert capsys.readouterr().out.count(".") == 2


@pytest.mark.parametrize(
    "argv",
    [[], ["launch"], ["run", "--startup-timeout-s", "0"], ["health", "--timeout-s", "x"]],
)
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == EXIT_USAGE
    capsys.readouterr()


def test_help_shows_examples_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["run", "--help"], ["token", "--help"], ["health", "--help"]):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args(argv)
        assert exited.value.code == EXIT_OK
        out = capsys.readouterr().out
        assert "examples:" in out
        assert "exit codes:" in out


def test_health_reports_unreachable_services_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in procs.START_ORDER:
        monkeypatch.setenv(f"MEMBERSHIP_{name.upper()}_ADDR", _free_addr())
    monkeypatch.setenv(procs.GATEWAY_GRPC_ADDR_ENV, _free_addr())
    assert main(["health", "--json", "--timeout-s", "0.5"]) == EXIT_FAILURE
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert set(report["services"]) == set(procs.START_ORDER)
    assert all(s["status"] != "SERVING" for s in report["services"].values())


def test_health_config_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEMBERSHIP_DB_POOL_MAX", "many")
    assert main(["health"]) == EXIT_USAGE
    assert "MEMBERSHIP_DB_POOL_MAX" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1:50051", ("127.0.0.1", 50051)), ("[::1]:7", ("::1", 7)), (":80", ("0.0.0.0", 80))],
)
def test_split_addr(addr: str, expected: tuple[str, int]) -> None:
    assert procs.split_addr(addr) == expected


@pytest.mark.parametrize("addr", ["localhost", "127.0.0.1:", "127.0.0.1:0", "h:65536", "h:x"])
def test_split_addr_rejects(addr: str) -> None:
    with pytest.raises(CliError) as raised:
        procs.split_addr(addr)
    assert raised.value.exit_code == EXIT_USAGE


def test_busy_address_is_refused_before_anything_starts() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(CliError, match="already in use") as raised:
            procs.ensure_addr_free("accounts", addr)
    assert raised.value.exit_code == EXIT_FAILURE
    procs.ensure_addr_free("accounts", addr)  # free again once the listener is gone


def test_child_env_overrides_only_the_suite_settings() -> None:
    addrs = {"accounts": "127.0.0.1:1", "points": "127.0.0.1:2", "privacy": "127.0.0.1:3"}
    base = {"PATH": "/bin", "DATABASE_URL": "old", "MEMBERSHIP_LOG_LEVEL": "DEBUG"}
    env = procs.child_env(base, "postgresql://db", Path("/keys"), addrs)
    assert env["PATH"] == "/bin"
    assert env["MEMBERSHIP_LOG_LEVEL"] == "DEBUG"
    assert env["DATABASE_URL"] == "postgresql://db"
    assert env["MEMBERSHIP_KEYS_DIR"] == "/keys"
    assert env["MEMBERSHIP_POINTS_ADDR"] == "127.0.0.1:2"


def test_describe_exit() -> None:
    assert procs.describe_exit(3) == "exited with code 3"
    assert procs.describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"


def test_stop_all_escalates_to_sigkill(started: list[procs.Child]) -> None:
    child = _child(started, IGNORES_SIGTERM, stdout=subprocess.PIPE)
    assert child.process.stdout is not None
    assert child.process.stdout.readline() == b"ready\n"
    assert procs.stop_all([child], grace_s=0.3) == ["stand-in"]
    assert child.exit_code() == -signal.SIGKILL


def test_startup_fails_when_a_child_exits(started: list[procs.Child]) -> None:
    child = _child(started, "raise SystemExit(3)")
    child.process.wait()
    with pytest.raises(CliError, match="stand-in exited with code 3 during startup"):
        launcher.wait_until_serving([child], 5, launcher.StopSignal())


def test_startup_times_out(started: list[procs.Child]) -> None:
    child = _child(started, "import time; time.sleep(60)")
    with pytest.raises(CliError, match=r"not SERVING within 0\.3 s: stand-in"):
        launcher.wait_until_serving([child], 0.3, launcher.StopSignal())


def test_signal_during_startup_or_running_is_a_clean_stop(started: list[procs.Child]) -> None:
    child = _child(started, "import time; time.sleep(60)")
    stop = launcher.StopSignal()
    stop.signum = signal.SIGTERM
    assert launcher.wait_until_serving([child], 5, stop) is False
    assert launcher.supervise([child], stop) == EXIT_OK


def test_a_child_dying_while_running_fails_the_run(started: list[procs.Child]) -> None:
    child = _child(started, "raise SystemExit(0)")
    child.process.wait()
    assert launcher.supervise([child], launcher.StopSignal()) == EXIT_FAILURE


def test_forget_dead_handles_keeps_live_pids(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / HANDLE_PIDS_FILE).write_text(json.dumps([dead.pid, 1]))
    forget_dead_handles(tmp_path)
    assert json.loads((tmp_path / HANDLE_PIDS_FILE).read_text()) == [1]
