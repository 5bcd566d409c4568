"""PostgreSQL's own client tools behind `membership backup` and `membership restore`.

Where pg_dump and pg_restore are (pgserver ships a matching pair), how they connect without
a password on their command line, progress with an ETA from their `--verbose` lines, and
what an archive holds (read with `pg_restore`, without any database).
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from membership_cli.errors import EXIT_CORRUPT, EXIT_UNREACHABLE, CliError, usage_error

PG_BIN_ENV = "MEMBERSHIP_PG_BIN_DIR"
SERVICE_SCHEMAS = ("accounts", "points", "privacy")
CONNECT_TIMEOUT_S = 10
# an error from pg_restore may quote a whole CREATE statement; its lines are bounded
MAX_LINE_BYTES = 1 << 20
ERROR_LINES_KEPT = 5
PROGRESS_INTERVAL_S = 1.0


# -- the binaries ---------------------------------------------------------------------------


def default_bin_dir(env: Mapping[str, str]) -> Path | None:
    """MEMBERSHIP_PG_BIN_DIR, else pgserver's binaries (found without importing pgserver,
    whose import starts platform probing we do not need)."""
    configured = env.get(PG_BIN_ENV, "")
    if configured:
        return Path(configured)
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def tool_path(bin_dir: Path | None, name: str) -> Path:
    if bin_dir is None:
        raise usage_error(f"no {name}: install pgserver or set --pg-bin-dir / {PG_BIN_ENV}")
    path = bin_dir / name
    if not path.is_file():
        raise usage_error(f"{path} not found (set --pg-bin-dir / {PG_BIN_ENV})")
    return path


# -- connecting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A database URL; the password goes to the tools through PGPASSWORD, never argv
    (other users of the machine can read a process's argv)."""

    url: str

    @property
    def database(self) -> str:
        return unquote(urlsplit(self.url).path.lstrip("/")) or "(default)"

    def libpq_url(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}@{hostinfo}"))

    def tool_env(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        env["PGCONNECT_TIMEOUT"] = str(CONNECT_TIMEOUT_S)
        password = urlsplit(self.url).password
        if password is not None:
            env["PGPASSWORD"] = unquote(password)
        return env


async def connect(target: Target) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(target.url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        raise CliError(
            f"cannot connect to database {target.database}: {type(exc).__name__}: {exc}",
            EXIT_UNREACHABLE,
        ) from exc
    except (ValueError, asyncpg.InterfaceError) as exc:
        raise usage_error(f"the database URL is not valid: {exc}") from exc


async def suite_schemas(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[]) ORDER BY nspname",
        list(SERVICE_SCHEMAS),
    )
    return [r["nspname"] for r in rows]


# -- running a tool -------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolResult:
    exit_code: int
    errors: list[str]


def _is_error(line: str) -> bool:
    # DETAIL lines may quote row values; the error line names the object, which is enough
    return ": error:" in line or ": warning:" in line or line.startswith("ERROR:")


async def run_tool(
    argv: Sequence[str | Path], env: Mapping[str, str], on_line: Callable[[str], None]
) -> ToolResult:
    """Runs a tool to the end, handing each stderr line to `on_line`; a cancelled run
    (Ctrl-C) stops the tool before returning."""
    proc = await asyncio.create_subprocess_exec(
        *[str(a) for a in argv],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        limit=MAX_LINE_BYTES,
    )
    errors: deque[str] = deque(maxlen=ERROR_LINES_KEPT)
    assert proc.stderr is not None
    try:
        async for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if _is_error(line):
                errors.append(line)
            on_line(line)
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    return ToolResult(code, list(errors))


async def capture(argv: Sequence[str | Path], env: Mapping[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *[str(a) for a in argv],
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
    )
    try:
        out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    code = proc.returncode
    assert code is not None
    return code, out.decode(errors="replace"), err.decode(errors="replace")


async def tool_version(tool: Path, env: Mapping[str, str]) -> str:
    code, out, _ = await capture([tool, "--version"], env)
    return out.strip() if code == 0 else "unknown"


# -- what an archive holds ------------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveContents:
    tables: list[str]  # "schema.table" of every TABLE DATA entry, in restore order
    schema_versions: dict[str, int]


def _corrupt(archive: Path, err: str) -> CliError:
    last = err.strip().splitlines()[-1:] or ["no output"]
    return CliError(f"{archive} is not a readable backup archive ({last[0]})", EXIT_CORRUPT)


def parse_table_data(listing: str) -> list[str]:
    """TOC lines look like `2938; 0 16413 TABLE DATA accounts members postgres`."""
    tables = []
    for line in listing.splitlines():
        if line.startswith(";"):
            continue
        _, marker, rest = line.partition(" TABLE DATA ")
        fields = rest.split()
        if marker and len(fields) >= 2:
            tables.append(f"{fields[0]}.{fields[1]}")
    return tables


COPY_MIGRATIONS = re.compile(r'^COPY "?([^".\s]+)"?\.schema_migrations \(')


def parse_schema_versions(script: str) -> dict[str, int]:
    """The highest `version` in each service schema's schema_migrations COPY block."""
    versions: dict[str, int] = {}
    schema: str | None = None
    for line in script.splitlines():
        if schema is None:
            match = COPY_MIGRATIONS.match(line)
            schema = match.group(1) if match else None
            continue
        if line == "\\.":
            schema = None
        elif schema in SERVICE_SCHEMAS:
            version = int(line.split("\t", 1)[0])
            versions[schema] = max(version, versions.get(schema, 0))
    return versions


async def read_archive(pg_restore: Path, archive: Path, env: Mapping[str, str]) -> ArchiveContents:
    """The table of contents and the schema versions, read from the file alone: a damaged
    or foreign file fails here, before any database is touched."""
    code, listing, err = await capture([pg_restore, "--list", archive], env)
    if code != 0:
        raise _corrupt(archive, err)
    argv: list[str | Path] = [pg_restore, "--data-only", "--table=schema_migrations"]
    argv += ["--file=-", archive]
    code, script, err = await capture(argv, env)
    if code != 0:
        raise _corrupt(archive, err)
    try:
        versions = parse_schema_versions(script)
    except ValueError as exc:
        raise _corrupt(archive, "schema_migrations unreadable") from exc
    return ArchiveContents(parse_table_data(listing), versions)


# -- progress -------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class Progress:
    """Table-by-table progress on stderr from a tool's `--verbose` lines, weighted (by table
    size when known) so the ETA is not thrown off by one large table; at most one line a
    second, so small databases print nothing but the summary."""

    def __init__(
        self,
        label: str,
        pattern: re.Pattern[str],
        weights: Mapping[str, int],
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        finishing: re.Pattern[str] | None = None,
    ) -> None:
        self._label = label
        self._pattern = pattern
        # after the data, pg_restore builds indexes and checks constraints, which can take
        # longer than the data itself: say so once rather than leave an ETA of 0 s standing
        self._finishing = finishing
        self._weights = dict(weights)
        self._total = max(1, sum(self._weights.values()))
        self._out = out
        self._clock = clock
        self._done_weight = 0
        self._current: str | None = None
        self._count = 0
        self._started: float | None = None
        self._last_print = clock()

    def on_line(self, line: str) -> None:
        match = self._pattern.search(line)
        if match is None:
            self._maybe_finishing(line)
            return
        if self._current is not None:
            self._done_weight += self._weights.get(self._current, 1)
        self._current = match.group(1)
        self._count += 1
        now = self._clock()
        if self._started is None:
            self._started = now
        if now - self._last_print >= PROGRESS_INTERVAL_S:
            self._last_print = now
            print(self.line(now), file=self._out or sys.stderr, flush=True)

    def _maybe_finishing(self, line: str) -> None:
        if self._finishing is None or self._count == 0 or not self._finishing.search(line):
            return
        self._finishing = None
        print(
            f"{self._label}: data of {self._count} tables loaded; "
            "creating indexes and constraints (no ETA)",
            file=self._out or sys.stderr,
            flush=True,
        )

    def line(self, now: float) -> str:
        fraction = min(1.0, self._done_weight / self._total)
        counted = f"table {self._count}/{len(self._weights)} ({fraction:.0%})"
        elapsed = now - (self._started if self._started is not None else now)
        if fraction <= 0:
            return f"{self._label}: {counted}, ETA unknown"
        eta = elapsed * (1 - fraction) / fraction
        return f"{self._label}: {counted}, ETA {format_duration(eta)}"
