"""`membership restore --input FILE`: a `membership backup` archive back into a database.

The archive is checked before any database is touched: against its manifest (size,
sha256) when there is one, and by pg_restore reading its table of contents. The restore is
one transaction (`pg_restore --clean --if-exists --single-transaction`): it replaces the
suite's schemas entirely or, on any error, changes nothing.

Members erased after the backup was taken come back with it. The privacy service re-erases
them from its erasure journal on its next start, before it serves; this command only counts
the journal's members for the reminder (it never writes the journal nor asks the database).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from membership_cli.backup import (
    EXIT_CODES,
    MANIFEST_SUFFIX,
    Manifest,
    add_common,
    command_env,
    database_target,
    embedded_pgdata,
    format_versions,
    guard_journal,
    hash_file,
    journal_location,
    load_manifest,
    manifest_path,
)
from membership_cli.errors import (
    EXIT_CORRUPT,
    EXIT_FAILURE,
    EXIT_FILE,
    EXIT_OK,
    EXIT_REFUSED,
    CliError,
)
from membership_cli.pg_tools import (
    ArchiveContents,
    Progress,
    Target,
    connect,
    default_bin_dir,
    read_archive,
    run_tool,
    suite_schemas,
    tool_path,
)
from services.privacy.erasure_journal import ErasureJournal
from services.privacy.settings import JOURNAL_ENV

RESTORING = re.compile(r'processing data for table "([^"]+)"')
POST_DATA = re.compile(r"creating (INDEX|CONSTRAINT|FK CONSTRAINT|TRIGGER) ")

RESTORE_EPILOG = f"""\
examples:
  membership restore --input backups/membership-20300101T000000Z.dump --yes
  DATABASE_URL=postgresql://... membership restore --input /mnt/backups/m.dump --yes --json
  membership restore --input m.dump --database-url postgresql://admin@db/membership_copy

Stop the services first: the restore refuses a database other sessions are connected to.
It replaces the accounts, points and privacy schemas with the backup's in one transaction
(--clean --if-exists --single-transaction); a target that already holds them needs --yes.
FILE{MANIFEST_SUFFIX}, when present, must match the archive (size and sha256).
Members erased after the backup was taken come back with it until the privacy service
starts: before serving, it re-erases every member its erasure journal
(MEMBERSHIP_ERASURE_JOURNAL, default <keys dir>/erasure-journal.jsonl) names. Start it
with the same journal as before the restore.

{EXIT_CODES}"""


@dataclass(frozen=True)
class CheckedArchive:
    path: Path
    contents: ArchiveContents
    manifest: Manifest | None


@dataclass(frozen=True)
class RestoreResult:
    database: str
    contents: ArchiveContents
    manifest: Manifest | None


@dataclass(frozen=True)
class JournalSummary:
    path: Path
    exists: bool
    members: int


def check_input(archive: Path) -> Manifest | None:
    """The file is there and matches its manifest (if it has one)."""
    if not archive.is_file():
        what = "is not a file" if archive.exists() else "does not exist"
        raise CliError(f"--input {archive} {what}", EXIT_FILE)
    manifest = load_manifest(archive)
    try:
        size, sha256 = hash_file(archive)
    except OSError as exc:
        raise CliError(f"cannot read {archive}: {exc.strerror}", EXIT_FILE) from exc
    if manifest is not None and (size, sha256) != (manifest.size_bytes, manifest.sha256):
        raise CliError(
            f"{archive} does not match {manifest_path(archive)} (size {size} vs "
            f"{manifest.size_bytes}, sha256 {sha256[:12]}… vs {manifest.sha256[:12]}…): "
            "damaged or replaced",
            EXIT_CORRUPT,
        )
    return manifest


async def other_sessions(conn: asyncpg.Connection) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    )
    return int(count)


async def check_target(target: Target, yes: bool) -> None:
    conn = await connect(target)
    try:
        existing = await suite_schemas(conn)
        sessions = await other_sessions(conn)
    finally:
        await conn.close()
    if sessions:
        # a running service would go on with what it cached, and privacy re-erases only
        # when it starts: restore into a database nobody uses
        raise CliError(
            f"{sessions} other session(s) are connected to database {target.database}; "
            "stop the services first (see pg_stat_activity)",
            EXIT_REFUSED,
        )
    if existing and not yes:
        raise CliError(
            f"database {target.database} already holds the schemas {', '.join(existing)}; "
            "add --yes to replace them with the backup",
            EXIT_REFUSED,
        )


async def check_archive(
    archive: Path, bin_dir: Path | None, env: Mapping[str, str]
) -> CheckedArchive:
    """Everything that can be checked without a database: a missing or damaged archive
    fails here, before any server is started or connected to."""
    pg_restore = tool_path(bin_dir, "pg_restore")
    # hashing a large archive must not stall the event loop (in-process callers serve on it)
    manifest = await asyncio.to_thread(check_input, archive)
    contents = await read_archive(pg_restore, archive, env)
    return CheckedArchive(archive, contents, manifest)


async def restore_checked(
    target: Target,
    checked: CheckedArchive,
    bin_dir: Path | None,
    yes: bool,
    env: Mapping[str, str],
) -> RestoreResult:
    pg_restore = tool_path(bin_dir, "pg_restore")
    await check_target(target, yes)
    weights = dict.fromkeys(checked.contents.tables, 1)
    progress = Progress("membership restore", RESTORING, weights, finishing=POST_DATA)
    argv: list[str | Path] = [pg_restore, "--clean", "--if-exists", "--single-transaction"]
    argv.append("--no-owner")
    argv += ["--verbose", f"--dbname={target.libpq_url()}", checked.path]
    result = await run_tool(argv, target.tool_env(env), progress.on_line)
    if result.exit_code != 0:
        detail = "; ".join(result.errors) or f"exit status {result.exit_code}"
        if "cannot drop schema" in detail:
            detail += (
                " (the target holds objects the backup lacks, e.g. of a newer schema"
                " version: restore into an empty database)"
            )
        raise CliError(f"pg_restore failed, nothing was changed: {detail}", EXIT_FAILURE)
    return RestoreResult(target.database, checked.contents, checked.manifest)


async def restore_backup(
    target: Target, archive: Path, bin_dir: Path | None, yes: bool, env: Mapping[str, str]
) -> RestoreResult:
    """Checks `archive`, then replaces the suite's schemas in `target` with it."""
    checked = await check_archive(archive, bin_dir, env)
    return await restore_checked(target, checked, bin_dir, yes, env)


def summarise_journal(path: Path) -> JournalSummary:
    """Distinct members in the journal: the most privacy may re-erase (it skips those the
    restored database already shows erased)."""
    journal = ErasureJournal(path)
    # several privacy replicas keep one file each in the same folder: any of them counts
    exists = any(p.exists() for p in journal.files())
    try:
        members = {e.member_id for e in journal.entries()}
    except OSError as exc:
        print(f"membership restore: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return JournalSummary(path, exists, 0)
    return JournalSummary(path, exists, len(members))


def journal_line(journal: JournalSummary) -> str:
    if not journal.exists:
        return (
            f"no erasure journal at {journal.path}: members erased after this backup was "
            f"taken stay restored unless privacy starts with {JOURNAL_ENV} pointing at it"
        )
    return (
        f"the privacy service re-applies {journal.members} journal erasure(s) on its next "
        f"start, before it serves (journal {journal.path})"
    )


def _print_restore(
    archive: Path, result: RestoreResult, journal: JournalSummary, duration_s: float, as_json: bool
) -> None:
    versions = result.contents.schema_versions
    if as_json:
        doc: dict[str, Any] = {
            "input": str(archive),
            "database": result.database,
            "tables": len(result.contents.tables),
            "schema_versions": versions,
            "checksum_verified": result.manifest is not None,
            "backup_created_at": result.manifest.created_at if result.manifest else None,
            "duration_s": round(duration_s, 3),
            "erasure_journal": {
                "path": str(journal.path),
                "exists": journal.exists,
                "members": journal.members,
            },
        }
        print(json.dumps(doc))
        return
    taken = (
        f"backup taken {result.manifest.created_at}, sha256 verified"
        if result.manifest
        else "no manifest: checksum not verified"
    )
    print(
        f"restored {archive} into database {result.database} in {duration_s:.1f} s: "
        f"{len(result.contents.tables)} tables\n"
        f"  schema versions: {format_versions(versions)}\n"
        f"  {taken}\n"
        f"{journal_line(journal)}"
    )


def cmd_restore(args: argparse.Namespace) -> int:
    env = command_env(args.database_url)
    data_dir = Path(args.data_dir).expanduser().resolve()
    archive = Path(args.input).expanduser().resolve()
    journal = journal_location(env, data_dir)
    pgdata = embedded_pgdata(env, data_dir)
    guard_journal(journal, [pgdata] if pgdata is not None else [])
    bin_dir = Path(args.pg_bin_dir) if args.pg_bin_dir else default_bin_dir(env)
    started = time.monotonic()
    checked = asyncio.run(check_archive(archive, bin_dir, env))
    with database_target(data_dir, env) as target:
        result = asyncio.run(restore_checked(target, checked, bin_dir, args.yes, env))
    duration_s = time.monotonic() - started
    _print_restore(archive, result, summarise_journal(journal), duration_s, args.json)
    return EXIT_OK


def add_restore(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "restore a backup into the suite's database"
    parser = subparsers.add_parser(
        "restore",
        help=summary,
        description=summary,
        epilog=RESTORE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=cmd_restore)
    parser.add_argument("--input", required=True, metavar="FILE", help="the archive to restore")
    parser.add_argument(
        "--yes", action="store_true", help="replace the suite's schemas if the target has them"
    )
    add_common(parser)
