"""End to end: `membership run` as a real process tree, driven over gRPC like its callers.

The launcher starts an embedded PostgreSQL in a temporary data folder and the three
services on free local ports; the test talks to accounts with tokens from `membership token`,
then stops the launcher with SIGINT and checks nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from membership.accounts.v1 import accounts_pb2, accounts_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SERVICES = ("accounts", "points", "privacy", "gateway")
# personal information the launcher's output must never show
PHONE = "13800138000"
FIRST_NAME = "Zhang Xiaoming"
NEW_NAME = "Li Chunhua"

SERVING_LINE_TIMEOUT_S = 45.0  # first run includes initdb and every migration
HEALTH_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 20.0
RPC_TIMEOUT_S = 10.0

ACTIVE = accounts_pb2.MEMBER_STATUS_ACTIVE
FROZEN = accounts_pb2.MEMBER_STATUS_FROZEN
CLOSED = accounts_pb2.MEMBER_STATUS_CLOSED
HEALTH_SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass
class Suite:
    process: subprocess.Popen[bytes]
    summary: dict[str, Any]
    stderr_path: Path
    env: dict[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def addr(self, service: str) -> str:
        return str(self.summary["services"][service]["addr"])

    def pids(self) -> list[int]:
        return [int(s["pid"]) for s in self.summary["services"].values()]

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "membership_cli", *args]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_is_free(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError:
            return False
    return True


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def suite_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "MEMBERSHIP_KEYS_DIR")}
    for name in SERVICES:
        env[f"MEMBERSHIP_{name.upper()}_ADDR"] = f"127.0.0.1:{_free_port()}"
    # the gateway: its gRPC pass-through (probed like a service) and its REST port
    env["MEMBERSHIP_GATEWAY_GRPC_ADDR"] = env.pop("MEMBERSHIP_GATEWAY_ADDR")
    env["MEMBERSHIP_GATEWAY_HTTP_ADDR"] = f"127.0.0.1:{_free_port()}"
    return env


def _read_summary(process: subprocess.Popen[bytes], stderr_path: Path) -> dict[str, Any]:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(SERVING_LINE_TIMEOUT_S)
    assert ready, f"launcher silent for {SERVING_LINE_TIMEOUT_S} s:\n{stderr_path.read_text()}"
    line = process.stdout.readline()
    assert line, f"launcher exited with {process.wait()}:\n{stderr_path.read_text()}"
    summary: dict[str, Any] = json.loads(line)
    return summary


class Launcher:
    """Starts suites; whatever a failing test leaves running is killed at teardown."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self._tmp = tmp_path
        self._env = env
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, data_dir: Path, label: str) -> Suite:
        stderr_path = self._tmp / f"launcher-{label}.stderr"
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                _cli("run", "--data-dir", str(data_dir), "--json"),
                env=self._env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                # its own process group, so teardown can kill the whole tree at once
                start_new_session=True,
            )
        self._started.append(process)
        return Suite(process, _read_summary(process, stderr_path), stderr_path, self._env)

    def cleanup(self) -> None:
        for process in self._started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


def _stop_leftover_postgres(data_dir: Path) -> None:
    pid_file = data_dir / "pg" / "postmaster.pid"
    if pid_file.exists():
        # postmaster.pid outlives a clean stop only when the server still runs
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)


@pytest.fixture
def launcher(tmp_path: Path, suite_env: dict[str, str]) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, suite_env)
    try:
        yield launcher
    finally:
        launcher.cleanup()
        _stop_leftover_postgres(tmp_path / "data")


def _stop(suite: Suite) -> int:
    suite.process.send_signal(signal.SIGINT)
    return suite.process.wait(timeout=STOP_TIMEOUT_S)


def _health(addr: str) -> int:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        except grpc.RpcError:
            return int(health_pb2.HealthCheckResponse.UNKNOWN)
        return int(response.status)


def _wait_all_serving(suite: Suite) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    pending = set(SERVICES)
    while pending and time.monotonic() < deadline:
        pending = {s for s in pending if _health(suite.addr(s)) != HEALTH_SERVING}
        if pending:
            time.sleep(0.2)
    assert not pending, f"not SERVING within {HEALTH_TIMEOUT_S} s: {sorted(pending)}"


def _token(suite: Suite, role: str) -> tuple[tuple[str, str], ...]:
    if role not in suite.tokens:
        env = {**suite.env, "MEMBERSHIP_KEYS_DIR": str(suite.summary["keys_dir"])}
        result = subprocess.run(
            _cli("token", "--role", role), env=env, capture_output=True, check=True, timeout=30
        )
        suite.tokens[role] = result.stdout.decode().strip()
    return (("authorization", f"Bearer {suite.tokens[role]}"),)


@contextlib.contextmanager
def _accounts(suite: Suite) -> Iterator[accounts_pb2_grpc.AccountsServiceStub]:
    with grpc.insecure_channel(suite.addr("accounts")) as channel:
        yield accounts_pb2_grpc.AccountsServiceStub(channel)


def _request_id() -> str:
    return uuid.uuid4().hex


def _register(suite: Suite) -> accounts_pb2.Member:
    request = accounts_pb2.RegisterMemberRequest(
        request_id=_request_id(), phone=PHONE, display_name=FIRST_NAME
    )
    with _accounts(suite) as accounts:
        member: accounts_pb2.Member = accounts.RegisterMember(
            request, metadata=_token(suite, "wallet-backend"), timeout=RPC_TIMEOUT_S
        )
    assert member.name == f"members/{member.member_id}"
    assert member.status == ACTIVE
    assert PHONE not in member.phone, "the default view is masked"
    return member


def _assert_no_personal_information(suite: Suite) -> None:
    output = suite.stderr_text()
    for secret in (PHONE, FIRST_NAME, NEW_NAME):
        assert secret not in output, "personal information in the launcher's output"


def _assert_stopped_cleanly(suite: Suite) -> None:
    assert _stop(suite) == 0, suite.stderr_text()
    for pid in suite.pids():
        assert _process_gone(pid), f"service process {pid} outlived the launcher"
    for service in SERVICES:
        assert _port_is_free(suite.addr(service)), f"{service} still listens"


def _update_name(suite: Suite, member: accounts_pb2.Member) -> None:
    request = accounts_pb2.UpdateMemberRequest(
        member=accounts_pb2.Member(name=member.name, display_name=NEW_NAME),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        request_id=_request_id(),
    )
    with _accounts(suite) as accounts:
        accounts.UpdateMember(
            request, metadata=_token(suite, "wallet-backend"), timeout=RPC_TIMEOUT_S
        )
        full = accounts.GetMember(
            accounts_pb2.GetMemberRequest(
                name=member.name, view=accounts_pb2.MEMBER_VIEW_FULL, purpose="e2e verification"
            ),
            metadata=_token(suite, "admin"),
            timeout=RPC_TIMEOUT_S,
        )
    assert full.display_name == NEW_NAME


def _change_status(suite: Suite, method: str, role: str, name: str) -> int:
    request_type = getattr(accounts_pb2, f"{method}Request")
    request = request_type(name=name, request_id=_request_id(), reason="e2e lifecycle")
    with _accounts(suite) as accounts:
        member = getattr(accounts, method)(
            request, metadata=_token(suite, role), timeout=RPC_TIMEOUT_S
        )
    return int(member.status)


def _gateway_get(url: str, key: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as response:
        return int(response.status), bytes(response.read())


def _assert_gateway_serves(suite: Suite) -> None:
    """The printed bootstrap admin key works on the printed REST address; the console page
    is where the launcher says."""
    gateway = suite.summary["gateway"]
    key = suite.summary["bootstrap_admin_key"]
    assert key and key.startswith("wm_"), "the first run prints a bootstrap admin key"
    status, body = _gateway_get(f"{gateway['rest']}/v1/consentStatistics", key)
    assert status == 200 and json.loads(body)["purposes"], body
    status, body = _gateway_get(gateway["console"])
    assert status == 200 and b"<html" in body.lower()


def test_member_lifecycle_across_real_processes(launcher: Launcher, tmp_path: Path) -> None:
    suite = launcher.start(tmp_path / "data", "lifecycle")
    assert suite.summary["status"] == "SERVING"
    assert set(suite.summary["services"]) == set(SERVICES)
    _wait_all_serving(suite)
    _assert_gateway_serves(suite)

    member = _register(suite)
    with _accounts(suite) as accounts:
        found = accounts.LookupMember(
            accounts_pb2.LookupMemberRequest(phone=PHONE),
            metadata=_token(suite, "wallet-backend"),
            timeout=RPC_TIMEOUT_S,
        )
    assert found.name == member.name
    _update_name(suite, member)

    assert _change_status(suite, "FreezeMember", "admin", member.name) == FROZEN
    assert _change_status(suite, "UnfreezeMember", "admin", member.name) == ACTIVE
    assert _change_status(suite, "CloseMember", "wallet-backend", member.name) == CLOSED

    _assert_stopped_cleanly(suite)
    _assert_no_personal_information(suite)


def test_second_run_reuses_the_data_dir(launcher: Launcher, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = launcher.start(data_dir, "first")
    member = _register(first)
    _assert_stopped_cleanly(first)

    second = launcher.start(data_dir, "second")
    _wait_all_serving(second)
    with _accounts(second) as accounts:
        again = accounts.GetMember(
            accounts_pb2.GetMemberRequest(name=member.name),
            metadata=_token(second, "wallet-backend"),
            timeout=RPC_TIMEOUT_S,
        )
        found = accounts.LookupMember(
            accounts_pb2.LookupMemberRequest(phone=PHONE),
            metadata=_token(second, "wallet-backend"),
            timeout=RPC_TIMEOUT_S,
        )
    assert again.member_id == member.member_id
    assert again.status == ACTIVE
    assert found.name == member.name
    _assert_stopped_cleanly(second)
    _assert_no_personal_information(first)
    _assert_no_personal_information(second)
