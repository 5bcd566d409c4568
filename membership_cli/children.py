"""The services as child processes of `membership run`: spawn, watch, stop."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from membership_cli.errors import CliError, usage_error

# privacy first: accounts calls it (at request time only, so this is a nicety, not a need)
START_ORDER = ("privacy", "accounts", "points", "gateway")
GATEWAY = "gateway"
# the gateway's gRPC pass-through address (what the launcher probes); REST has its own
GATEWAY_GRPC_ADDR_ENV = "MEMBERSHIP_GATEWAY_GRPC_ADDR"
GATEWAY_HTTP_ADDR_ENV = "MEMBERSHIP_GATEWAY_HTTP_ADDR"
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Child:
    name: str
    addr: str
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        return self.process.poll()


def describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise usage_error(f"address {addr!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 (":port" means every interface)


METRICS_PORT_OFFSET = 1000
MAX_PORT = 65535


def ensure_addr_free(name: str, addr: str) -> None:
    """Fails if something listens on `addr` already.

    gRPC binds with SO_REUSEPORT, so a second server on a busy port would start and share
    the traffic with the first; this plain bind notices the listener instead.
    """
    host, port = split_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # sockets in TIME_WAIT from a previous run must not count as busy
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"{name}: {addr} is already in use (is another `membership run` running?)"
                ) from exc
            raise usage_error(f"{name}: cannot listen on {addr}: {exc.strerror}") from exc


def child_env(
    base: Mapping[str, str], database_url: str, keys_dir: Path, addrs: Mapping[str, str]
) -> dict[str, str]:
    env = dict(base)
    env["DATABASE_URL"] = database_url
    env["MEMBERSHIP_KEYS_DIR"] = str(keys_dir)
    for name, addr in addrs.items():
        env[GATEWAY_GRPC_ADDR_ENV if name == GATEWAY else f"MEMBERSHIP_{name.upper()}_ADDR"] = addr
        env.setdefault(f"MEMBERSHIP_{name.upper()}_METRICS_ADDR", metrics_addr_for(addr))
    return env


def metrics_addr_for(addr: str) -> str:
    """Prometheus endpoint of a local service: its gRPC port + METRICS_PORT_OFFSET."""
    host, port = split_addr(addr)
    metrics_port = port + METRICS_PORT_OFFSET
    return f"{host}:{metrics_port}" if metrics_port <= MAX_PORT else ""


def spawn(name: str, addr: str, env: Mapping[str, str], quiet_stdout: bool) -> Child:
    """Starts `python -m services.<name>`; its JSON log lines go to the inherited stderr.

    With `quiet_stdout`, a stray write to the child's stdout lands on stderr too, so the
    launcher's own stdout stays one parseable JSON object.
    """
    module = GATEWAY if name == GATEWAY else f"services.{name}"
    argv = [sys.executable, "-m", module]  # our own interpreter and module
    stdout = sys.stderr.fileno() if quiet_stdout else None
    process = subprocess.Popen(argv, env=dict(env), stdout=stdout)  # noqa: S603
    return Child(name, addr, process)


def spawn_all(
    addrs: Mapping[str, str], env: Mapping[str, str], quiet_stdout: bool = False
) -> list[Child]:
    children: list[Child] = []
    try:
        for name in START_ORDER:
            children.append(spawn(name, addrs[name], env, quiet_stdout))
    except BaseException:
        stop_all(children)
        raise
    return children


def first_exited(children: Iterable[Child]) -> Child | None:
    return next((c for c in children if c.exit_code() is not None), None)


def _signal(children: Iterable[Child], signum: int) -> None:
    for child in children:
        if child.exit_code() is None:
            # it may exit between the check and the signal
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signum)


def _wait_all(children: list[Child], deadline: float) -> bool:
    while time.monotonic() < deadline:
        if all(c.exit_code() is not None for c in children):
            return True
        time.sleep(POLL_INTERVAL_S)
    return all(c.exit_code() is not None for c in children)


def stop_all(children: list[Child], grace_s: float = STOP_GRACE_S) -> list[str]:
    """SIGTERM, then SIGKILL after `grace_s`; returns the names that had to be killed."""
    _signal(children, signal.SIGTERM)
    if _wait_all(children, time.monotonic() + grace_s):
        return []
    stubborn = [c for c in children if c.exit_code() is None]
    _signal(stubborn, signal.SIGKILL)
    for child in stubborn:
        child.process.wait()
    return [c.name for c in stubborn]
