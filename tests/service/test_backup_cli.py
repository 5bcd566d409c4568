"""`membership backup` / `membership restore` on their error paths, each with its own exit
code, against a real PostgreSQL; and the pieces (progress, archive parsing, URLs) alone."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from membership_cli.backup import manifest_path
from membership_cli.errors import (
    EXIT_CORRUPT,
    EXIT_FAILURE,
    EXIT_FILE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
)
from membership_cli.main import main
from membership_cli.pg_tools import (
    Progress,
    Target,
    default_bin_dir,
    parse_schema_versions,
    parse_table_data,
)
from services.privacy.settings import JOURNAL_ENV
from tests.support.postgres import PostgresForTests

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nothing"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An environment of our own: keys (and so the journal) under tmp_path."""
    keys = tmp_path / "keys"
    monkeypatch.setenv("MEMBERSHIP_KEYS_DIR", str(keys))
    monkeypatch.delenv(JOURNAL_ENV, raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return keys


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def archive(
    database: str, tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    """A backup of a freshly migrated database."""
    path = tmp_path / "m.dump"
    code, out, err = run(capsys, "backup", "--output", str(path), "--database-url", database)
    assert code == EXIT_OK, err
    assert out.startswith("backup written: ")
    return path


@pytest.fixture
def other_database(postgres: PostgresForTests) -> Iterator[str]:
    dsn = asyncio.run(postgres.new_database())
    yield dsn
    asyncio.run(postgres.drop_database(dsn))


def restore(
    capsys: pytest.CaptureFixture[str], archive: Path, dsn: str, *more: str
) -> tuple[int, str, str]:
    return run(capsys, "restore", "--input", str(archive), "--database-url", dsn, *more)


async def _fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def fetchval(dsn: str, sql: str) -> object:
    return asyncio.run(_fetchval(dsn, sql))


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def execute(dsn: str, sql: str) -> None:
    asyncio.run(_execute(dsn, sql))


# -- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["backup", "restore"])
def test_help_has_examples_and_every_exit_code(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"membership {command} --" in out
    for code in range(7):
        assert re.search(rf"^  {code}  ", out, re.MULTILINE), code


# -- files ----------------------------------------------------------------------------------


def test_a_missing_input_exits_3_before_any_database_is_asked(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = restore(capsys, tmp_path / "nope.dump", UNREACHABLE, "--yes")
    assert code == EXIT_FILE and out == ""
    assert "does not exist" in err


def test_a_file_that_is_no_archive_exits_4(
    tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.dump"
    garbage.write_bytes(b"PGDMP but not really\n")
    code, _, err = restore(capsys, garbage, UNREACHABLE, "--yes")
    assert code == EXIT_CORRUPT, err
    assert "not a readable backup archive" in err


def test_an_archive_that_differs_from_its_manifest_exits_4(
    archive: Path, other_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    code, _, err = restore(capsys, archive, other_database, "--yes")
    assert code == EXIT_CORRUPT and "does not match" in err
    manifest_path(archive).write_text("{not json")
    code, _, err = restore(capsys, archive, other_database, "--yes")
    assert code == EXIT_CORRUPT and "not a backup manifest" in err


def test_the_manifest_describes_the_archive(archive: Path) -> None:
    manifest = json.loads(manifest_path(archive).read_text())
    assert manifest["size_bytes"] == archive.stat().st_size
    assert manifest["schema_versions"]["accounts"] >= 1
    assert manifest["tables"] > 10 and manifest["format"] == "membership-backup/1"
    assert [p.name for p in archive.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_backup_into_a_missing_folder_exits_3(
    database: str, tmp_path: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "no" / "such" / "m.dump"
    code, _, err = run(capsys, "backup", "--output", str(output), "--database-url", database)
    assert code == EXIT_FILE, err


def test_a_failed_dump_leaves_the_previous_backup_in_place(
    archive: Path, database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = archive.read_bytes(), manifest_path(archive).read_text()
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        script = fake / tool
        # writes half a file, then fails as pg_dump does when the server goes away
        script.write_text(
            "#!/bin/sh\nfor a; do case $a in --file=*) echo partial > ${a#--file=};; esac; done\n"
            "echo 'pg_dump: error: connection lost' >&2\nexit 1\n"
        )
        script.chmod(0o755)
    argv = ["backup", "--output", str(archive), "--database-url", database]
    code, _, err = run(capsys, *argv, "--pg-bin-dir", str(fake))
    assert code == EXIT_FAILURE and "connection lost" in err
    assert (archive.read_bytes(), manifest_path(archive).read_text()) == before
    assert sorted(p.name for p in archive.parent.iterdir() if p.is_file()) == [
        "m.dump",
        "m.dump.manifest.json",
    ]


# -- databases ------------------------------------------------------------------------------


def test_an_unreachable_database_exits_5(
    archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = restore(capsys, archive, UNREACHABLE, "--yes")
    assert code == EXIT_UNREACHABLE, err
    argv = ["backup", "--output", str(tmp_path / "x.dump"), "--database-url", UNREACHABLE]
    code, _, err = run(capsys, *argv)
    assert code == EXIT_UNREACHABLE, err
    assert not (tmp_path / "x.dump").exists()


def test_replacing_the_suites_schemas_needs_yes(
    archive: Path, other_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = "SELECT count(*) FROM accounts.schema_migrations WHERE name = 'marker'"
    execute(
        other_database,
        "INSERT INTO accounts.schema_migrations (version, name, checksum)"
        " VALUES (998, 'marker', 'x')",
    )
    code, out, err = restore(capsys, archive, other_database)
    assert code == EXIT_REFUSED and out == "" and "--yes" in err
    assert fetchval(other_database, marker) == 1  # the refusal touched nothing
    code, out, err = restore(capsys, archive, other_database, "--yes", "--json")
    assert code == EXIT_OK, err
    assert fetchval(other_database, marker) == 0  # replaced by the backup's rows
    doc = json.loads(out)
    assert doc["checksum_verified"] and doc["tables"] > 10
    assert doc["erasure_journal"] == {
        "path": str((archive.parent / "keys" / "erasure-journal.jsonl").resolve()),
        "exists": False,
        "members": 0,
    }


def test_a_failing_restore_changes_nothing(
    archive: Path, other_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # an object the backup does not know keeps `DROP SCHEMA accounts` from succeeding
    execute(
        other_database,
        "CREATE TABLE accounts.newer (x int); INSERT INTO accounts.schema_migrations"
        " (version, name, checksum) VALUES (999, 'newer', 'x')",
    )
    code, _, err = restore(capsys, archive, other_database, "--yes")
    assert code == EXIT_FAILURE and "nothing was changed" in err, err
    assert fetchval(other_database, "SELECT max(version) FROM accounts.schema_migrations") == 999


def test_a_database_in_use_is_not_restored_into(
    archive: Path, other_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async def hold_a_session() -> tuple[int, str, str]:
        conn = await asyncpg.connect(other_database)
        try:
            return await asyncio.to_thread(restore, capsys, archive, other_database, "--yes")
        finally:
            await conn.close()

    code, _, err = asyncio.run(hold_a_session())
    assert code == EXIT_REFUSED and "stop the services" in err


def test_the_journal_inside_the_embedded_database_folder_is_refused(
    tmp_path: Path,
    cli_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv(JOURNAL_ENV, str(data_dir / "pg" / "erasure-journal.jsonl"))
    for argv in (
        ["backup", "--output", str(tmp_path / "m.dump")],
        ["restore", "--input", str(tmp_path / "m.dump"), "--yes"],
    ):
        code, _, err = run(capsys, *argv, "--data-dir", str(data_dir))
        assert code == EXIT_USAGE and "erasure journal" in err
    assert not (data_dir / "pg").exists()  # refused before the embedded server started


# -- the pieces -----------------------------------------------------------------------------


def test_progress_reports_weighted_fraction_and_eta() -> None:
    now = [100.0]
    out = io.StringIO()
    pattern = re.compile(r'table "([^"]+)"')
    progress = Progress("backup", pattern, {"a.big": 300, "a.small": 100}, out, lambda: now[0])
    progress.on_line('dumping contents of table "a.big"')
    now[0] = 106.0
    progress.on_line("unrelated line")
    progress.on_line('dumping contents of table "a.small"')
    assert out.getvalue() == "backup: table 2/2 (75%), ETA 2 s\n"
    assert progress.line(100.0) == "backup: table 2/2 (75%), ETA 0 s"


def test_progress_says_when_only_indexes_are_left() -> None:
    out = io.StringIO()
    progress = Progress(
        "restore",
        re.compile(r'data for table "([^"]+)"'),
        {"a.t": 1},
        out,
        finishing=re.compile("creating INDEX"),
    )
    progress.on_line('pg_restore: creating INDEX "a.early"')  # before the data: not yet
    progress.on_line('pg_restore: processing data for table "a.t"')
    progress.on_line('pg_restore: creating INDEX "a.t_by_x"')
    progress.on_line('pg_restore: creating INDEX "a.t_by_y"')
    assert out.getvalue() == (
        "restore: data of 1 tables loaded; creating indexes and constraints (no ETA)\n"
    )


def test_archive_listing_and_versions_are_parsed() -> None:
    listing = "; comment\n2938; 0 16413 TABLE DATA accounts members postgres\n6; 2615 1 SCHEMA - x"
    assert parse_table_data(listing) == ["accounts.members"]
    script = (
        "COPY accounts.schema_migrations (version, name) FROM stdin;\n1\tm\n2\tn\n\\.\n"
        "COPY points.schema_migrations (version, name) FROM stdin;\n9\tx\n\\.\n"
        "COPY other.schema_migrations (version, name) FROM stdin;\n7\ty\n\\.\n"
    )
    assert parse_schema_versions(script) == {"accounts": 2, "points": 9}


def test_the_password_reaches_the_tools_through_the_environment() -> None:
    target = Target("postgresql://backup:s%40cret@db.internal:5433/membership?sslmode=require")
    assert target.libpq_url() == "postgresql://backup@db.internal:5433/membership?sslmode=require"
    assert target.tool_env({})["PGPASSWORD"] == "s@cret"
    assert target.database == "membership"
    assert "PGPASSWORD" not in Target("postgresql:///m?host=/tmp").tool_env({})


def test_the_tools_come_from_pgserver_unless_configured() -> None:
    found = default_bin_dir({})
    assert found is not None and (found / "pg_dump").is_file()
    assert default_bin_dir({"MEMBERSHIP_PG_BIN_DIR": "/opt/pg/bin"}) == Path("/opt/pg/bin")
