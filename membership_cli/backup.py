"""`membership backup --output FILE`: one consistent `pg_dump -Fc` of the suite's database.

pg_dump reads every schema (accounts, points, privacy) in one snapshot, so the three
services' rows agree with each other. The archive is written to a temporary file next to
FILE and renamed into place only once complete and fsync'd, with a sidecar manifest
(`FILE.manifest.json`: time, schema versions, size, sha256) that `membership restore` checks.

The erasure journal is not in the backup, on purpose: it must outlive any restore
(services/privacy/erasure_journal.py), so both commands refuse to run when it sits inside
what they write or what a restore overwrites.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from membership_cli import launcher
from membership_cli.errors import EXIT_CORRUPT, EXIT_FILE, EXIT_OK, CliError, usage_error
from membership_cli.pg_tools import (
    PG_BIN_ENV,
    Progress,
    Target,
    connect,
    default_bin_dir,
    read_archive,
    run_tool,
    suite_schemas,
    tool_path,
    tool_version,
)
from services.privacy.settings import journal_path

MANIFEST_FORMAT = "membership-backup/1"
MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 64 * 1024
HASH_CHUNK = 1 << 20
DUMPING = re.compile(r'dumping contents of table "([^"]+)"')
# an empty table still costs a round trip; a page's worth keeps it in the ETA
MIN_TABLE_WEIGHT = 8192

EXIT_CODES = """\
exit codes:
  0  success
  1  runtime failure (pg_dump or pg_restore failed, or the database holds nothing of
     the suite's; nothing was written or changed)
  2  usage or configuration error (e.g. the erasure journal inside the database folder)
  3  the backup file is missing, unreadable, or cannot be written
  4  the file is not a backup archive, or differs from its manifest (size, sha256)
  5  the database cannot be reached
  6  refused: the target already holds the suite's schemas and --yes was not given,
     or other sessions are connected to it
"""

BACKUP_EPILOG = f"""\
examples:
  membership backup --output backups/membership-$(date -u +%Y%m%dT%H%M%SZ).dump
  DATABASE_URL=postgresql://... membership backup --output /mnt/backups/m.dump --json
  membership backup --output m.dump --database-url postgresql://backup@db/membership

Writes FILE (a pg_dump custom-format archive of the whole database, one snapshot) and
FILE{MANIFEST_SUFFIX} (time, schema version of each service, size, sha256). Without
--database-url or DATABASE_URL it uses the embedded PostgreSQL under --data-dir, as
`membership run` does. pg_dump/pg_restore come from --pg-bin-dir, {PG_BIN_ENV}, or the
pgserver package; they must be at least the server's major version.
The erasure journal (MEMBERSHIP_ERASURE_JOURNAL) is not part of the backup: keep it on
storage that no restore rolls back.

{EXIT_CODES}"""


# -- the manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    created_at: str
    database: str
    schema_versions: dict[str, int]
    tables: int
    size_bytes: int
    sha256: str
    pg_dump_version: str
    format: str = MANIFEST_FORMAT

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def load_manifest(archive: Path) -> Manifest | None:
    """The archive's manifest, None when there is none; a damaged one is EXIT_CORRUPT."""
    path = manifest_path(archive)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", EXIT_FILE) from exc
    try:
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw)
        if doc.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}")
        versions = {str(k): int(v) for k, v in doc["schema_versions"].items()}
        return Manifest(
            str(doc["created_at"]),
            str(doc["database"]),
            versions,
            int(doc["tables"]),
            int(doc["size_bytes"]),
            str(doc["sha256"]),
            str(doc["pg_dump_version"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"{path} is not a backup manifest ({exc})", EXIT_CORRUPT) from exc


def hash_file(path: Path, sync: bool = False) -> tuple[int, str]:
    """Size and sha256; with `sync`, also flushed to disk (before it is renamed into place,
    so a crash never leaves a complete-looking name over incomplete data)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return size, digest.hexdigest()


# -- where things live ----------------------------------------------------------------------


def journal_location(env: Mapping[str, str], data_dir: Path) -> Path:
    """The erasure journal the privacy service uses with this environment: keys dir as
    `membership run` resolves it (MEMBERSHIP_KEYS_DIR, else <data-dir>/keys)."""
    configured = env.get("MEMBERSHIP_KEYS_DIR", "")
    keys_dir = Path(configured).expanduser() if configured else data_dir / "keys"
    return journal_path(dict(env), keys_dir).expanduser().resolve()


def embedded_pgdata(env: Mapping[str, str], data_dir: Path) -> Path | None:
    return None if env.get("DATABASE_URL") else data_dir / "pg"


def guard_journal(journal: Path, overwritten: Sequence[Path]) -> None:
    """A journal that a restore rolls back (it sits in the database folder) or that a
    backup replaces would bring erased members back: refuse before anything happens."""
    for place in (p.resolve() for p in overwritten):
        if journal == place or place in journal.parents:
            raise usage_error(
                f"the erasure journal {journal} is inside {place}, which backup/restore "
                "overwrites; set MEMBERSHIP_ERASURE_JOURNAL to storage outside the database "
                "and its backups"
            )


def command_env(database_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


@contextlib.contextmanager
def database_target(data_dir: Path, env: Mapping[str, str]) -> Iterator[Target]:
    """DATABASE_URL, else the embedded PostgreSQL (started, or shared with a running
    `membership run`, and released afterwards)."""
    with launcher.database(launcher.prepare_data_dir(data_dir), env) as db:
        yield Target(db.url)


# -- taking the backup ----------------------------------------------------------------------


async def table_weights(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT n.nspname || '.' || c.relname AS name, pg_table_size(c.oid) AS bytes"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname <> 'information_schema'"
        " AND n.nspname NOT LIKE 'pg\\_%'"
    )
    return {r["name"]: int(r["bytes"]) + MIN_TABLE_WEIGHT for r in rows}


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def check_output(output: Path) -> None:
    if output.is_dir():
        raise CliError(f"--output {output} is a directory", EXIT_FILE)
    parent = output.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise CliError(f"cannot write into {parent}: no such folder, or not writable", EXIT_FILE)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, output: Path, manifest: Manifest) -> None:
    """Renames the archive into place with its manifest. An older manifest of the same name
    goes first: if we stop halfway, a missing manifest is better than one vouching for the
    wrong archive."""
    target = manifest_path(output)
    temp_manifest = _temp_name(target)
    try:
        with temp_manifest.open("w") as f:
            json.dump(manifest.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        target.unlink(missing_ok=True)
        temp.replace(output)
        temp_manifest.replace(target)
    finally:
        temp_manifest.unlink(missing_ok=True)
    _fsync_dir(output.parent)


async def _inspect_source(target: Target) -> dict[str, int]:
    conn = await connect(target)
    try:
        schemas = await suite_schemas(conn)
        weights = await table_weights(conn)
    finally:
        await conn.close()
    if not schemas:
        raise CliError(
            f"database {target.database} holds none of the suite's schemas; "
            "is the database URL right, and has the suite run on it?"
        )
    return weights


async def _dump(pg_dump: Path, target: Target, temp: Path, env: Mapping[str, str]) -> None:
    weights = await _inspect_source(target)
    progress = Progress("membership backup", DUMPING, weights)
    argv: list[str | Path] = [pg_dump, "--format=custom", "--verbose", f"--file={temp}"]
    argv.append(f"--dbname={target.libpq_url()}")
    result = await run_tool(argv, target.tool_env(env), progress.on_line)
    if result.exit_code != 0:
        detail = "; ".join(result.errors) or f"exit status {result.exit_code}"
        raise CliError(f"pg_dump failed, no backup written: {detail}")


async def take_backup(
    target: Target, output: Path, bin_dir: Path | None, env: Mapping[str, str]
) -> Manifest:
    """Dumps `target` to `output` (an absolute path) atomically and returns the manifest
    written beside it."""
    pg_dump, pg_restore = tool_path(bin_dir, "pg_dump"), tool_path(bin_dir, "pg_restore")
    check_output(output)
    temp = _temp_name(output)
    created_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        await _dump(pg_dump, target, temp, env)
        size, sha256 = await asyncio.to_thread(hash_file, temp, True)
        # read back from the file: the versions are those of the dump's own snapshot
        contents = await read_archive(pg_restore, temp, env)
        version = await tool_version(pg_dump, env)
        manifest = Manifest(
            created_at,
            target.database,
            contents.schema_versions,
            len(contents.tables),
            size,
            sha256,
            version,
        )
        publish(temp, output, manifest)
    finally:
        temp.unlink(missing_ok=True)
    return manifest


# -- the command ----------------------------------------------------------------------------


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_versions(versions: Mapping[str, int]) -> str:
    return ", ".join(f"{schema} {v}" for schema, v in sorted(versions.items())) or "none"


def _print_backup(output: Path, manifest: Manifest, duration_s: float, as_json: bool) -> None:
    if as_json:
        doc = {
            "output": str(output),
            "manifest": str(manifest_path(output)),
            **manifest.to_json(),
            "duration_s": round(duration_s, 3),
        }
        print(json.dumps(doc))
        return
    print(
        f"backup written: {output} ({format_size(manifest.size_bytes)}, "
        f"{manifest.tables} tables) in {duration_s:.1f} s\n"
        f"  schema versions: {format_versions(manifest.schema_versions)}\n"
        f"  sha256 {manifest.sha256}\n"
        f"  manifest: {manifest_path(output)}"
    )


def cmd_backup(args: argparse.Namespace) -> int:
    env = command_env(args.database_url)
    data_dir = Path(args.data_dir).expanduser().resolve()
    output = Path(args.output).expanduser().resolve()
    overwritten = [output, manifest_path(output)]
    pgdata = embedded_pgdata(env, data_dir)
    if pgdata is not None:
        overwritten.append(pgdata)
    guard_journal(journal_location(env, data_dir), overwritten)
    bin_dir = Path(args.pg_bin_dir) if args.pg_bin_dir else default_bin_dir(env)
    started = time.monotonic()
    with database_target(data_dir, env) as target:
        manifest = asyncio.run(take_backup(target, output, bin_dir, env))
    _print_backup(output, manifest, time.monotonic() - started, args.json)
    return EXIT_OK


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default DATABASE_URL, else the embedded one)"
    )
    parser.add_argument(
        "--data-dir",
        default=str(launcher.DEFAULT_DATA_DIR),
        help="where the embedded PostgreSQL lives (default %(default)s)",
    )
    parser.add_argument("--pg-bin-dir", help=f"folder of pg_dump/pg_restore (default {PG_BIN_ENV})")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def add_backup(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "write a consistent backup of the suite's database"
    parser = subparsers.add_parser(
        "backup",
        help=summary,
        description=summary,
        epilog=BACKUP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=cmd_backup)
    parser.add_argument("--output", required=True, metavar="FILE", help="the archive to write")
    add_common(parser)
