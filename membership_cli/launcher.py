"""`membership run`: the whole suite on one machine, behind `make run`.

Starts (or reuses) the database, the signing key and one process per service, waits until
each reports SERVING on the standard health check, then supervises them: a signal stops
everything and exits 0, a service that dies stops everything and exits 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import asyncpg

from gateway import keys as gateway_keys
from gateway import store as gateway_store
from gateway.console_cookies import SECURE_COOKIES_ENV
from membership_cli import children as procs
from membership_cli.embedded_pg import EmbeddedPostgres
from membership_cli.errors import EXIT_FAILURE, EXIT_OK, CliError, usage_error
from membership_cli.health import SERVING, probe
from services.runtime.config import ConfigError, load_settings
from services.runtime.identity import load_or_create_signing_key

DEFAULT_DATA_DIR = Path(".data")
DEFAULT_STARTUP_TIMEOUT_S = 30.0
PROBE_TIMEOUT_S = 1.0
POLL_INTERVAL_S = 0.2


@dataclass(frozen=True)
class RunOptions:
    data_dir: Path = DEFAULT_DATA_DIR
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S
    json_output: bool = False


@dataclass(frozen=True)
class Database:
    url: str
    embedded: bool


class StopSignal:
    """Remembers SIGINT/SIGTERM; the loops poll it, so a signal never cuts a step in half."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


def note(message: str) -> None:
    """Progress for the operator; stderr, so stdout stays parseable."""
    print(f"membership run: {message}", file=sys.stderr, flush=True)


def service_addrs() -> dict[str, str]:
    try:
        addrs = dict(load_settings().service_addrs)
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    addrs[procs.GATEWAY] = os.environ.get(procs.GATEWAY_GRPC_ADDR_ENV, "127.0.0.1:50050")
    return {name: addrs[name] for name in procs.START_ORDER}


def metrics_addrs() -> dict[str, str]:
    """Each process's Prometheus endpoint as `membership run` sets it (empty: none)."""
    return {
        name: os.environ.get(f"MEMBERSHIP_{name.upper()}_METRICS_ADDR")
        or procs.metrics_addr_for(addr)
        for name, addr in service_addrs().items()
    }


def gateway_http_addr() -> str:
    return os.environ.get(procs.GATEWAY_HTTP_ADDR_ENV, "127.0.0.1:8080")


def prepare_data_dir(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser().resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise usage_error(f"--data-dir {data_dir} is not a directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir


def prepare_keys(data_dir: Path, env: Mapping[str, str]) -> Path:
    """The keys directory (MEMBERSHIP_KEYS_DIR, else <data-dir>/keys) with the signing key."""
    configured = env.get("MEMBERSHIP_KEYS_DIR", "")
    keys_dir = Path(configured).expanduser().resolve() if configured else data_dir / "keys"
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not configured:
        # ours alone: tighten it even if an older run or a umask left it open
        keys_dir.chmod(0o700)
    load_or_create_signing_key(keys_dir)
    return keys_dir


@contextmanager
def database(data_dir: Path, env: Mapping[str, str]) -> Iterator[Database]:
    external = env.get("DATABASE_URL", "")
    if external:
        yield Database(external, embedded=False)
        return
    server = EmbeddedPostgres(data_dir / "pg")
    note(f"starting embedded PostgreSQL in {server.pgdata}")
    try:
        try:
            url = server.start()
        except Exception as exc:
            raise CliError(
                f"embedded PostgreSQL did not start ({type(exc).__name__}); "
                f"its log is {server.pgdata / 'log'}"
            ) from exc
        yield Database(url, embedded=True)
    finally:
        note("stopping embedded PostgreSQL")
        server.stop()


def wait_until_serving(children: list[procs.Child], timeout_s: float, stop: StopSignal) -> bool:
    """True once every child is SERVING; False if a signal asked to stop first."""
    deadline = time.monotonic() + timeout_s
    pending = list(children)
    while pending:
        # the signal first: a child that exits because of the same Ctrl-C is no failure
        if stop.requested:
            return False
        exited = procs.first_exited(children)
        if exited is not None:
            code = exited.exit_code()
            assert code is not None
            raise CliError(f"{exited.name} {procs.describe_exit(code)} during startup")
        if time.monotonic() > deadline:
            names = ", ".join(c.name for c in pending)
            raise CliError(f"not SERVING within {timeout_s:g} s: {names}")
        pending = [c for c in pending if probe(c.addr, PROBE_TIMEOUT_S) != SERVING]
        if pending:
            time.sleep(POLL_INTERVAL_S)
    return True


def supervise(children: list[procs.Child], stop: StopSignal) -> int:
    while not stop.requested:
        exited = procs.first_exited(children)
        if exited is not None:
            code = exited.exit_code()
            assert code is not None
            note(f"{exited.name} {procs.describe_exit(code)}; stopping the others")
            return EXIT_FAILURE
        time.sleep(POLL_INTERVAL_S)
    assert stop.signum is not None
    note(f"{signal.Signals(stop.signum).name} received; stopping")
    return EXIT_OK


def token_command(keys_dir: Path) -> str:
    command = "membership token --role admin"
    if keys_dir == (Path.cwd() / DEFAULT_DATA_DIR / "keys").resolve():
        return command
    return f"MEMBERSHIP_KEYS_DIR={keys_dir} {command}"


def admin_key_command(data_dir: Path) -> str:
    """How to make an admin API key for this suite (same data dir, same DATABASE_URL)."""
    command = 'membership apikey create --role admin --name "<who it is for>"'
    if data_dir == (Path.cwd() / DEFAULT_DATA_DIR).resolve():
        return command
    return f"{command} --data-dir {data_dir}"


def admin_key_lines(admin_key: str | None, data_dir: Path) -> list[str]:
    """The bootstrap key the first time; every later start says how to get one, since a
    first run stopped before it printed the key never shows it again (only a hash is kept)."""
    if admin_key:
        return [f"Bootstrap admin API key (shown once, stored only as a hash): {admin_key}"]
    return [f"Need an admin API key?  {admin_key_command(data_dir)}"]


def announce(
    children: list[procs.Child],
    db: Database,
    keys_dir: Path,
    data_dir: Path,
    as_json: bool,
    admin_key: str | None = None,
) -> None:
    hint = token_command(keys_dir)
    rest = f"http://{gateway_http_addr()}"
    metrics = metrics_addrs()
    if as_json:
        summary = {
            "status": SERVING,
            "services": {
                c.name: {"addr": c.addr, "pid": c.pid, "metrics": metrics[c.name]} for c in children
            },
            # an external URL may carry a password; the embedded one never does
            "database": {"embedded": db.embedded, "url": db.url if db.embedded else None},
            "data_dir": str(data_dir),
            "keys_dir": str(keys_dir),
            "token_command": hint,
            "gateway": {
                "rest": rest,
                "openapi": f"{rest}/openapi.json",
                "console": f"{rest}/console/",
            },
            # printed once, the first time; only its hash is stored
            "bootstrap_admin_key": admin_key,
            "admin_key_command": admin_key_command(data_dir),
        }
        print(json.dumps(summary), flush=True)
        return
    where = "embedded PostgreSQL" if db.embedded else "DATABASE_URL"
    lines = [f"membership suite is serving (database: {where})"]
    lines += [f"  {c.name:<9} {c.addr:<21} pid {c.pid}" for c in children]
    lines += [f"  REST      {rest}  (OpenAPI: {rest}/openapi.json)"]
    lines += [f"  console   {rest}/console/  (sign in with an officer or admin key)"]
    lines += admin_key_lines(admin_key, data_dir)
    lines += [f"Get a caller token:  {hint}", "Check health:        membership health"]
    lines += ["Suite status:        membership status"]
    lines += ["Stop with Ctrl-C."]
    print("\n".join(lines), flush=True)


def run_services(
    options: RunOptions, db: Database, keys_dir: Path, data_dir: Path, stop: StopSignal
) -> int:
    addrs = service_addrs()
    admin_key = bootstrap_admin_key(db.url)
    env = procs.child_env(os.environ, db.url, keys_dir, addrs)
    # the console is served on plain http here, where a browser drops Secure cookies; an
    # operator who puts TLS in front of `membership run` sets it on again
    env.setdefault(SECURE_COOKIES_ENV, "0")
    children = procs.spawn_all(addrs, env, quiet_stdout=options.json_output)
    try:
        if not wait_until_serving(children, options.startup_timeout_s, stop):
            note("stop requested during startup")
            return EXIT_OK
        announce(children, db, keys_dir, data_dir, options.json_output, admin_key)
        return supervise(children, stop)
    finally:
        killed = procs.stop_all(children)
        if killed:
            note(f"killed after {procs.STOP_GRACE_S:g} s: {', '.join(killed)}")


def bootstrap_admin_key(database_url: str) -> str | None:
    """An admin API key the first time the suite runs (none exists yet); None afterwards."""
    return asyncio.run(_bootstrap_admin_key(database_url))


async def _bootstrap_admin_key(database_url: str) -> str | None:
    conn = await asyncpg.connect(database_url)
    try:
        await gateway_store.migrate_schema(conn)
        if await gateway_keys.list_keys(conn, limit=1):
            return None
        _, key = await gateway_keys.create_key(conn, "bootstrap admin", "admin", None)
        return key
    finally:
        await conn.close()


def run(options: RunOptions) -> int:
    stop = StopSignal()
    stop.install()
    for name, addr in service_addrs().items():
        procs.ensure_addr_free(name, addr)
    procs.ensure_addr_free("gateway (REST)", gateway_http_addr())
    data_dir = prepare_data_dir(options.data_dir)
    keys_dir = prepare_keys(data_dir, os.environ)
    with database(data_dir, os.environ) as db:
        if stop.requested:
            return EXIT_OK
        return run_services(options, db, keys_dir, data_dir, stop)
