"""The Citus layout (deploy/citus/) against the migrated schemas, in real PostgreSQL: every
member-scoped table keeps member_id in its primary key and in every unique key (docs/design.md §5),
every table has a decision in distribute.sql, and the distribution and foreign keys are ones
Citus accepts. No Citus here: the catalogue is read from plain PostgreSQL, which is where the
rule is made or broken (in the migrations)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from gateway.store import migrate_schema as migrate_gateway
from tests.support.citus_layout import (
    DISTRIBUTE_SQL,
    Catalogue,
    Layout,
    decision_problems,
    distribution_problems,
    foreign_key_problems,
    member_key_problems,
    read_catalogue,
    read_layout,
    readme_placements,
    readme_problems,
)
from tests.support.postgres import PostgresForTests

# The tables that have a member_id column but do not keep it in every unique key, and why.
# This list is the only place where docs/design.md §5 may be departed from; the test fails when
# an entry is no longer needed. Every one is written up in deploy/citus/README.md.
KNOWN_EXCEPTIONS: dict[str, str] = {
    "accounts.member_lookup": (
        "blind index: (kind, digest) is unique across members, so the key cannot hold"
        " member_id; distributed by digest"
    ),
    "accounts.referral_codes": "a code names one member among all; distributed by code",
    "accounts.registration_requests": (
        "RegisterMember's idempotency key, issued before the member id exists;"
        " distributed by request_id"
    ),
    "privacy.outbox": "keyed by a global event_id (the relay's cursor); coordinator-local",
    "privacy.data_requests": (
        "keyed by the request id (the officers' queue reads across members); coordinator-local"
    ),
    "privacy.data_exports": (
        "keyed by its data request; coordinator-local with privacy.data_requests"
    ),
}


async def _migrated_catalogue(postgres: PostgresForTests) -> Catalogue:
    """A fresh clone of the migrated template, plus the gateway's schema (the template holds
    the three services'; the gateway migrates its own at start)."""
    dsn = await postgres.new_database()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate_gateway(conn)
            return await read_catalogue(conn)
        finally:
            await conn.close()
    finally:
        await postgres.drop_database(dsn)


@pytest.fixture(scope="module")
def catalogue(postgres: PostgresForTests) -> Catalogue:
    # read once for the module: the checks below only look at it
    return asyncio.run(_migrated_catalogue(postgres))


@pytest.fixture(scope="module")
def layout() -> Layout:
    return read_layout()


def _report(problems: list[str]) -> str:
    return "\n".join(["", *problems])


def test_every_table_has_one_decision(layout: Layout, catalogue: Catalogue) -> None:
    problems = decision_problems(layout, catalogue)
    assert not problems, _report(problems)


def test_readme_says_what_distribute_sql_does(layout: Layout) -> None:
    problems = readme_problems(layout, readme_placements())
    assert not problems, _report(problems)


def test_member_scoped_tables_keep_member_id_in_every_key(catalogue: Catalogue) -> None:
    problems = member_key_problems(catalogue, KNOWN_EXCEPTIONS)
    assert not problems, _report(problems)


def test_distribution_columns_and_colocation(layout: Layout, catalogue: Catalogue) -> None:
    problems = distribution_problems(layout, catalogue, KNOWN_EXCEPTIONS)
    assert not problems, _report(problems)


def test_foreign_keys_are_ones_citus_accepts(layout: Layout, catalogue: Catalogue) -> None:
    problems = foreign_key_problems(layout, catalogue)
    assert not problems, _report(problems)


def test_every_exception_is_distributed_by_its_key_or_local(layout: Layout) -> None:
    """A departure is never a reference table nor undecided (README: departures)."""
    undecided = [
        table
        for table in KNOWN_EXCEPTIONS
        if layout.placement(table) not in ("distributed", "local")
    ]
    assert not undecided, undecided


async def test_the_checks_catch_keys_without_member_id(database: str) -> None:
    """The catalogue reading sees every kind of unique key: a migration that adds a unique
    constraint, a (partial, expression, INCLUDE) unique index or an exclusion constraint
    without member_id, or a new table without a decision, fails the layout tests."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute(
            "CREATE TABLE points.scratch (member_id text NOT NULL, code text NOT NULL,"
            " PRIMARY KEY (member_id, code), CONSTRAINT scratch_code UNIQUE (code));"
            "CREATE UNIQUE INDEX scratch_partial ON points.scratch (code) WHERE code <> '';"
            "CREATE UNIQUE INDEX scratch_expr ON points.scratch (lower(code), member_id);"
            "CREATE UNIQUE INDEX scratch_include ON points.scratch (code) INCLUDE (member_id);"
            "ALTER TABLE points.scratch ADD CONSTRAINT scratch_excl"
            " EXCLUDE USING btree (code WITH =);"
            "ALTER TABLE points.balances ADD CONSTRAINT balances_scratch UNIQUE (available)"
        )
        catalogue = await read_catalogue(conn)
    finally:
        await conn.close()
    problems = member_key_problems(catalogue, KNOWN_EXCEPTIONS)
    caught = {p.split(" (")[0] for p in problems}
    assert caught == {
        "points.scratch: unique constraint scratch_code",
        "points.scratch: unique index scratch_partial",
        "points.scratch: unique index scratch_include",
        "points.scratch: exclusion constraint scratch_excl",
        "points.balances: unique constraint balances_scratch",
    }, problems  # not scratch_expr: member_id is one of its key columns
    decisions = "\n".join(decision_problems(read_layout(), catalogue))
    assert "points.scratch has no Citus decision" in decisions


# Stand-ins for Citus's functions and catalogue, enough to run distribute.sql on plain
# PostgreSQL: they refuse what Citus refuses for order (co-location with a table not yet
# distributed, a column the table lacks) and record every call.
CITUS_STANDINS = """
CREATE TABLE public.pg_dist_partition (logicalrelid regclass PRIMARY KEY, kind text NOT NULL);
CREATE TABLE public.citus_calls (n serial, logicalrelid regclass NOT NULL);
CREATE FUNCTION public.create_reference_table(table_name regclass) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO public.citus_calls (logicalrelid) VALUES (table_name);
    INSERT INTO public.pg_dist_partition VALUES (table_name, 'reference');
$$;
CREATE FUNCTION public.create_distributed_table(
    table_name regclass, distribution_column text, colocate_with text
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = table_name AND attname = distribution_column) THEN
        RAISE EXCEPTION '% has no column %', table_name, distribution_column;
    END IF;
    IF colocate_with <> 'none' AND NOT EXISTS (SELECT 1 FROM public.pg_dist_partition
            WHERE logicalrelid = colocate_with::regclass AND kind = 'distributed') THEN
        RAISE EXCEPTION '% is not distributed yet', colocate_with;
    END IF;
    INSERT INTO public.citus_calls (logicalrelid) VALUES (table_name);
    INSERT INTO public.pg_dist_partition VALUES (table_name, 'distributed');
END;
$$;
"""


async def test_distribute_sql_runs_in_order_and_again(database: str, layout: Layout) -> None:
    """The file runs on the migrated schemas (every name resolves, every co-location comes
    after its table), and a second run calls nothing: the pg_dist_partition guards hold."""
    sql = DISTRIBUTE_SQL.read_text(encoding="utf-8")
    conn = await asyncpg.connect(database)
    try:
        await migrate_gateway(conn)
        await conn.execute(CITUS_STANDINS)
        await conn.execute(sql)
        calls = await conn.fetch(
            "SELECT logicalrelid::text AS t FROM public.citus_calls ORDER BY n"
        )
        await conn.execute(sql)
        again = await conn.fetchval("SELECT count(*) FROM public.citus_calls")
    finally:
        await conn.close()
    expected = [table for table, placed in layout.decisions if placed != "local"]
    assert [r["t"] for r in calls] == expected
    assert again == len(expected)


def _mutated(tmp_path: Path, *edits: tuple[str, str]) -> Layout:
    text = DISTRIBUTE_SQL.read_text(encoding="utf-8")
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / "distribute.sql"
    path.write_text(text, encoding="utf-8")
    return read_layout(path)


def test_the_checks_catch_layout_mistakes(catalogue: Catalogue, tmp_path: Path) -> None:
    """A forgotten table, a call the test cannot read, a member table outside the group and
    a foreign key Citus refuses all fail, with their names."""
    guard = "WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition\n                  WHERE"
    layout = _mutated(
        tmp_path,
        (
            f"SELECT create_distributed_table('points.lots', 'member_id',\n"
            f"                                colocate_with => 'accounts.members')\n{guard}"
            " logicalrelid = 'points.lots'::regclass);",
            "",
        ),
        (
            "SELECT create_distributed_table('points.holds', 'member_id',\n"
            "                                colocate_with => 'accounts.members')",
            "SELECT create_distributed_table('points.holds', 'member_id')",
        ),
        (
            "'points.transfers', 'member_id',\n"
            "                                colocate_with => 'accounts.members'",
            "'points.transfers', 'member_id', colocate_with => 'none'",
        ),
        (
            f"SELECT create_reference_table('privacy.purpose_notices')\n{guard}",
            f"-- local privacy.purpose_notices: moved\nSELECT 1\n{guard}",
        ),
    )
    problems = "\n".join(
        decision_problems(layout, catalogue)
        + distribution_problems(layout, catalogue, KNOWN_EXCEPTIONS)
        + foreign_key_problems(layout, catalogue)
    )
    assert "points.lots has no Citus decision" in problems
    assert "create_distributed_table('points.holds', …) needs its column and an explicit" in (
        problems
    )
    assert "points.transfers is distributed by member_id but not co-located" in problems
    assert (
        "privacy.consent_records -> privacy.purpose_notices"
        " (consent_records_purpose_code_notice_version_fkey): Citus refuses a foreign key"
        " from a distributed to a local table"
    ) in problems
