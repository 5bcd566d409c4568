"""The suite as separate processes on one embedded PostgreSQL, for fault and soak tests.

`membership run` treats a dying service as fatal and stops everything; these tests need to
kill -9 one service (or PostgreSQL itself) and start it again, so each service is its own
process here, started with the environment the launcher gives its children.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from membership_cli import children as procs
from membership_cli import launcher
from membership_cli.embedded_pg import EmbeddedPostgres
from membership_cli.health import SERVING, probe
from tests.support.postgres import pg_bin_dir
from tests.support.suite import free_port

SERVICES = ("privacy", "accounts", "points")
WITH_GATEWAY = (*SERVICES, procs.GATEWAY)
STARTUP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 1.0
POLL_S = 0.1
PG_CTL_TIMEOUT_S = 30.0
PGSERVER_ROOT_USER = "pgserver"
# set to keep each cluster's folder (service logs, PostgreSQL's log) for a post-mortem
KEEP_ENV = "CHAOS_KEEP"
# light on a shared 2-CPU machine, and quick to notice a dead database
CHILD_SETTINGS = {
    "MEMBERSHIP_DB_POOL_MIN": "1",
    "MEMBERSHIP_DB_POOL_MAX": "4",
    "MEMBERSHIP_SHUTDOWN_GRACE_S": "0.5",
    "MEMBERSHIP_OUTGOING_TIMEOUT_S": "2",
    "MEMBERSHIP_LOG_LEVEL": "WARNING",
}


def with_application_name(url: str, name: str) -> str:
    """asyncpg passes unknown URL parameters as server settings: each service's sessions
    are then told apart in pg_stat_activity."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


class Cluster:
    """An embedded PostgreSQL under `root` and the services as killable processes."""

    def __init__(self, root: Path, names: tuple[str, ...] = SERVICES, **settings: str) -> None:
        self.root = root
        self.names = names
        self.pg = EmbeddedPostgres(root / "pg")
        self.url = ""
        self.keys_dir = root / "keys"
        self.addrs = {name: f"127.0.0.1:{free_port()}" for name in names}
        self.http_addr = f"127.0.0.1:{free_port()}"
        self.settings = {**CHILD_SETTINGS, **settings}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    # -- the database -----------------------------------------------------------------------

    def start_database(self) -> None:
        self.url = self.pg.start()
        self.keys_dir = launcher.prepare_keys(self.root, {"MEMBERSHIP_KEYS_DIR": ""})
        if procs.GATEWAY in self.names:
            launcher.bootstrap_admin_key(self.url)  # migrates the gateway's schema

    def stop_postgres(self) -> None:
        """Fast shutdown (SIGINT to the postmaster): every session is cut at once.

        A signal rather than `pg_ctl stop`: pg_ctl as pgserver's user means a fork of this
        multi-threaded (gRPC) process, whose child crashed now and then."""
        pidfile = self.pg.pgdata / "postmaster.pid"
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + PG_CTL_TIMEOUT_S
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(POLL_S)
        assert not pidfile.exists(), "PostgreSQL did not stop"

    def start_postgres(self) -> None:
        """pg_ctl start with the options pgserver used, so the services' URL is valid again."""
        bin_dir = pg_bin_dir()
        assert bin_dir is not None
        socket_dir = self.url.rpartition("host=")[2].split("&")[0]
        argv = [str(bin_dir / "pg_ctl"), "-D", str(self.pg.pgdata), "-w"]
        argv += ["-l", str(self.pg.pgdata / "log"), "-o", '-h ""', "-o", f"-k {socket_dir}"]
        if os.geteuid() == 0:
            # as root, pgserver runs PostgreSQL as its own user
            argv = ["runuser", "-u", PGSERVER_ROOT_USER, "--", *argv]
        subprocess.run([*argv, "start"], check=True, capture_output=True, timeout=PG_CTL_TIMEOUT_S)

    # -- the services -----------------------------------------------------------------------

    def env_for(self, name: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEMBERSHIP_")}
        base |= self.settings
        base[procs.GATEWAY_HTTP_ADDR_ENV] = self.http_addr
        for other in self.names:
            if other != procs.GATEWAY:
                base[f"MEMBERSHIP_{other.upper()}_METRICS_ADDR"] = f"127.0.0.1:{free_port()}"
        url = with_application_name(self.url, f"chaos-{name}")
        return procs.child_env(base, url, self.keys_dir, self.addrs)

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        module = name if name == procs.GATEWAY else f"services.{name}"
        log = (self.root / f"{name}.log").open("ab")
        self._logs.append(log)
        process = subprocess.Popen(
            [sys.executable, "-m", module],
            env=self.env_for(name),
            stdout=log,
            stderr=log,
            # its own group: teardown kills whatever it may have started as well
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def start(self, name: str) -> None:
        self.spawn(name)
        self.wait_serving(name)

    def start_all(self) -> None:
        for name in self.names:
            self.spawn(name)
        for name in self.names:
            self.wait_serving(name)

    def health(self, name: str) -> str:
        return probe(self.addrs[name], PROBE_TIMEOUT_S)

    def wait_serving(self, name: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        process = self.processes[name]
        while self.health(name) != SERVING:
            code = process.poll()
            if code is not None:
                raise AssertionError(f"{name} {procs.describe_exit(code)}: {self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not SERVING in {timeout_s:g} s")
            time.sleep(POLL_S)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    def log_tail(self, name: str, chars: int = 2000) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-chars:]

    def close(self) -> None:
        for name in self.processes:
            self.kill(name)
        for log in self._logs:
            log.close()
        # pgserver stops only the postmaster it started itself, not one restarted by
        # start_postgres (and, as root, not always that one): stop whichever is running
        if (self.pg.pgdata / "postmaster.pid").exists():
            self.stop_postgres()
        self.pg.stop()


@contextlib.contextmanager
def running_cluster(names: tuple[str, ...] = SERVICES, **settings: str) -> Iterator[Cluster]:
    """A cluster in a folder of its own under /tmp: pgserver, run as root, hands the data
    folder to its own user, who cannot enter pytest's private tmp_path."""
    root = Path(tempfile.mkdtemp(prefix="wm-chaos-"))
    cluster = Cluster(root, names, **settings)
    try:
        cluster.start_database()
        cluster.start_all()
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            if not os.environ.get(KEEP_ENV):
                shutil.rmtree(root, ignore_errors=True)
