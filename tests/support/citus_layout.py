"""The Citus layout of deploy/citus/distribute.sql, what PostgreSQL's catalogue says about the
tables, and the checks that hold the two together (tests/service/test_citus_layout.py).

The checks are pure functions returning one message per problem, so that a failing test says
every problem at once, each with what to do about it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg

CITUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "citus"
DISTRIBUTE_SQL = CITUS_DIR / "distribute.sql"
README = CITUS_DIR / "README.md"
SCHEMAS = ("accounts", "points", "privacy", "gateway")
MEMBER_COLUMN = "member_id"
# the first table of the member colocation group; every member table is co-located with it
MEMBER_ANCHOR = "accounts.members"

Placement = Literal["distributed", "reference", "local"]

_NAME = r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*"
# `-- local schema.table: reason`, one line each
_LOCAL_LINE = re.compile(rf"^--\s*local\s+(?P<table>{_NAME})\s*:\s*(?P<reason>.*?)\s*$", re.M)
# one call per statement, guarded by pg_dist_partition on the same table
_CALL = re.compile(
    r"SELECT\s+create_(?P<kind>reference|distributed)_table\s*\(\s*'(?P<table>[^']+)'"
    r"(?:\s*,\s*'(?P<column>[^']+)')?"
    r"(?:\s*,\s*colocate_with\s*=>\s*'(?P<colocate>[^']+)')?\s*\)"
    r"\s+WHERE\s+NOT\s+EXISTS\s*\(\s*SELECT\s+1\s+FROM\s+pg_dist_partition\s+"
    r"WHERE\s+logicalrelid\s*=\s*'(?P<guard>[^']+)'::regclass\s*\)",
    re.I,
)
# anything that distributes or undistributes a table, to catch calls in another form
_ANY_CITUS_CALL = re.compile(r"\b(create_\w*table|undistribute_table|alter_distributed_table)\b")


@dataclass(frozen=True)
class Distributed:
    table: str
    column: str
    colocate_with: str  # "none" (a group of its own) or an earlier distributed table


@dataclass
class Layout:
    """What distribute.sql decides, in file order; `problems` are statements it could not
    read, which the tests report rather than skip."""

    decisions: list[tuple[str, Placement]] = field(default_factory=list)
    distributed: dict[str, Distributed] = field(default_factory=dict)
    reference: set[str] = field(default_factory=set)
    local: dict[str, str] = field(default_factory=dict)  # table -> reason
    problems: list[str] = field(default_factory=list)

    def placement(self, table: str) -> Placement | None:
        if table in self.distributed:
            return "distributed"
        if table in self.reference:
            return "reference"
        return "local" if table in self.local else None

    def group(self, table: str) -> str:
        """The first table of `table`'s colocation group."""
        seen: set[str] = set()
        while (entry := self.distributed[table]).colocate_with != "none" and table not in seen:
            seen.add(table)
            table = entry.colocate_with
        return table

    def position(self, table: str) -> int:
        """Where the table's call is in the file (-1 if it has none)."""
        calls = [t for t, placed in self.decisions if placed != "local"]
        return calls.index(table) if table in calls else -1


def read_layout(path: Path = DISTRIBUTE_SQL) -> Layout:
    text = path.read_text(encoding="utf-8")
    layout = Layout()
    for match in _LOCAL_LINE.finditer(text):
        layout.decisions.append((match["table"], "local"))
        layout.local[match["table"]] = match["reason"]
    code = re.sub(r"--[^\n]*", "", text)  # comments hold no calls, only the local lines
    for number, statement in enumerate(code.split(";"), start=1):
        if _ANY_CITUS_CALL.search(statement):
            _read_call(layout, number, " ".join(statement.split()))
    return layout


def _read_call(layout: Layout, number: int, statement: str) -> None:
    match = _CALL.fullmatch(statement)
    if match is None:
        layout.problems.append(
            f"statement {number} is not in the form the test reads (SELECT create_…_table"
            f"('schema.table'[, 'column', colocate_with => '…']) WHERE NOT EXISTS (SELECT 1"
            f" FROM pg_dist_partition WHERE logicalrelid = 'schema.table'::regclass)):"
            f" {statement[:160]}"
        )
        return
    table = match["table"]
    if match["guard"] != table:
        layout.problems.append(f"the call for {table} is guarded by {match['guard']}")
    if match["kind"] == "reference":
        _read_reference(layout, table, match)
    else:
        _read_distributed(layout, table, match)


def _read_reference(layout: Layout, table: str, match: re.Match[str]) -> None:
    if match["column"] or match["colocate"]:
        layout.problems.append(f"create_reference_table('{table}') takes no other argument")
    layout.decisions.append((table, "reference"))
    layout.reference.add(table)


def _read_distributed(layout: Layout, table: str, match: re.Match[str]) -> None:
    column, colocate = match["column"], match["colocate"]
    if not column or not colocate:
        # Citus's implicit 'default' colocation groups tables by column type alone
        layout.problems.append(
            f"create_distributed_table('{table}', …) needs its column and an explicit"
            " colocate_with ('none' or a table distributed above it)"
        )
        return
    if colocate != "none" and colocate not in layout.distributed:
        layout.problems.append(
            f"{table} is co-located with {colocate}, which is not distributed above it"
        )
        return
    layout.decisions.append((table, "distributed"))
    layout.distributed[table] = Distributed(table, column, colocate)


# a row of the README's layout table: | `schema.table` | placement … |
_README_ROW = re.compile(
    rf"^\|\s*`(?P<table>{_NAME})`\s*\|\s*(?P<placement>distributed|reference|local)\b", re.M
)


def readme_placements(path: Path = README) -> list[tuple[str, str]]:
    """(table, placement) of each row of the README's layout table, in order."""
    text = path.read_text(encoding="utf-8")
    return [(m["table"], m["placement"]) for m in _README_ROW.finditer(text)]


def readme_problems(layout: Layout, rows: Sequence[tuple[str, str]]) -> list[str]:
    """The README's layout table says what distribute.sql does, once per table."""
    problems = []
    seen: dict[str, int] = {}
    for table, placement in rows:
        seen[table] = seen.get(table, 0) + 1
        decided = layout.placement(table)
        if decided is not None and placement != decided:
            problems.append(f"README.md puts {table} as {placement}, distribute.sql as {decided}")
    for table, _ in layout.decisions:
        if table not in seen:
            problems.append(f"README.md's layout table has no row for {table}")
    problems.extend(f"README.md has {n} rows for {t}" for t, n in sorted(seen.items()) if n > 1)
    problems.extend(
        f"README.md has a row for {t}, which distribute.sql does not name"
        for t in sorted(seen)
        if layout.placement(t) is None
    )
    return problems


# --- the catalogue ------------------------------------------------------------------------


@dataclass(frozen=True)
class UniqueKey:
    """A primary key, unique constraint, unique index (partial or not) or exclusion
    constraint: anything Citus must enforce within one shard."""

    table: str
    name: str
    kind: str  # primary key | unique constraint | unique index | exclusion constraint
    columns: tuple[str | None, ...]  # key columns in order; None for an expression
    partial: bool

    def describe(self) -> str:
        cols = ", ".join(c or "<expression>" for c in self.columns)
        return f"{self.kind} {self.name} ({cols}){' WHERE …' if self.partial else ''}"


@dataclass(frozen=True)
class ForeignKey:
    table: str
    name: str
    columns: tuple[str, ...]
    referenced: str
    referenced_columns: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    columns: dict[str, dict[str, str]]  # table -> column -> type
    unique_keys: list[UniqueKey]
    foreign_keys: list[ForeignKey]

    def keys_of(self, table: str) -> list[UniqueKey]:
        return [k for k in self.unique_keys if k.table == table]


_COLUMNS_SQL = """
SELECT n.nspname || '.' || c.relname AS tbl, a.attname::text AS col,
       format_type(a.atttypid, a.atttypmod) AS type
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE n.nspname = ANY($1::text[]) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""

# only the key columns count (indnkeyatts): INCLUDE columns take no part in uniqueness
_UNIQUE_KEYS_SQL = """
SELECT n.nspname || '.' || c.relname AS tbl, ic.relname::text AS name,
       CASE WHEN i.indisprimary THEN 'primary key'
            WHEN i.indisexclusion THEN 'exclusion constraint'
            WHEN EXISTS (SELECT 1 FROM pg_constraint con
                         WHERE con.conindid = i.indexrelid AND con.contype = 'u')
            THEN 'unique constraint'
            ELSE 'unique index' END AS kind,
       i.indpred IS NOT NULL AS partial,
       ARRAY(SELECT a.attname::text FROM generate_series(0, i.indnkeyatts - 1) AS k(n)
             LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.n]
             ORDER BY k.n) AS columns
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE n.nspname = ANY($1::text[]) AND (i.indisunique OR i.indisexclusion)
  AND c.relkind IN ('r', 'p') AND NOT c.relispartition
"""

_FOREIGN_KEYS_SQL = """
SELECT sn.nspname || '.' || s.relname AS tbl, con.conname::text AS name,
       tn.nspname || '.' || t.relname AS referenced,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord) AS columns,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
             ORDER BY k.ord) AS referenced_columns
FROM pg_constraint con
JOIN pg_class s ON s.oid = con.conrelid
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_class t ON t.oid = con.confrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
  AND (sn.nspname = ANY($1::text[]) OR tn.nspname = ANY($1::text[]))
"""


async def read_catalogue(conn: asyncpg.Connection, schemas: Sequence[str] = SCHEMAS) -> Catalogue:
    columns: dict[str, dict[str, str]] = {}
    for r in await conn.fetch(_COLUMNS_SQL, list(schemas)):
        table_columns = columns.setdefault(r["tbl"], {})
        if r["col"] is not None:  # a table without columns is still a table
            table_columns[r["col"]] = r["type"]
    unique_keys = [
        UniqueKey(r["tbl"], r["name"], r["kind"], tuple(r["columns"]), r["partial"])
        for r in await conn.fetch(_UNIQUE_KEYS_SQL, list(schemas))
    ]
    foreign_keys = [
        ForeignKey(
            r["tbl"],
            r["name"],
            tuple(r["columns"]),
            r["referenced"],
            tuple(r["referenced_columns"]),
        )
        for r in await conn.fetch(_FOREIGN_KEYS_SQL, list(schemas))
    ]
    return Catalogue(columns, unique_keys, foreign_keys)


# --- the checks ---------------------------------------------------------------------------

_WHAT_TO_DO = (
    "decide where it lives under Citus and write it into deploy/citus/distribute.sql:"
    " create_distributed_table('{t}', 'member_id', colocate_with => 'accounts.members') if it"
    " is member-scoped (member_id first in its primary key and every unique key);"
    " create_reference_table('{t}') if it is a small rule or catalogue table; or a"
    " `-- local {t}: <why>` line if it must stay on the coordinator; and say why in"
    " deploy/citus/README.md"
)


def decision_problems(layout: Layout, catalogue: Catalogue) -> list[str]:
    """Every table has exactly one decision; every decision names an existing table."""
    problems = list(layout.problems)
    named: dict[str, list[Placement]] = {}
    for table, placed in layout.decisions:
        named.setdefault(table, []).append(placed)
    for table in sorted(catalogue.columns):
        if table not in named:
            problems.append(f"{table} has no Citus decision: {_WHAT_TO_DO.format(t=table)}")
    for table, placements in sorted(named.items()):
        if len(placements) > 1:
            problems.append(f"{table} is named {len(placements)} times ({', '.join(placements)})")
        if table not in catalogue.columns:
            problems.append(f"{table} is named in distribute.sql but no migration creates it")
        if layout.local.get(table) == "":
            problems.append(f"{table} is kept local without a reason")
    return problems


def member_key_problems(catalogue: Catalogue, exceptions: Mapping[str, str]) -> list[str]:
    """docs/design.md §5: member_id in the primary key and in every unique key of each table that
    has a member_id column, but for the known exceptions (which must still be needed)."""
    problems = []
    for table, columns in sorted(catalogue.columns.items()):
        if MEMBER_COLUMN not in columns:
            continue
        broken = _keys_without(catalogue, table, MEMBER_COLUMN)
        if table in exceptions:
            if not broken:
                problems.append(
                    f"{table} now keeps member_id in every key: remove it from KNOWN_EXCEPTIONS"
                )
            continue
        problems.extend(f"{table}: {why}" for why in broken)
    problems.extend(
        f"KNOWN_EXCEPTIONS names {table}, which has no member_id column (or no longer exists)"
        for table in sorted(exceptions)
        if MEMBER_COLUMN not in catalogue.columns.get(table, {})
    )
    return problems


def _keys_without(catalogue: Catalogue, table: str, column: str) -> list[str]:
    keys = catalogue.keys_of(table)
    missing = [] if any(k.kind == "primary key" for k in keys) else ["has no primary key"]
    return missing + [
        f"{key.describe()} does not contain {column}"
        for key in sorted(keys, key=lambda k: k.name)
        if column not in key.columns
    ]


def distribution_problems(
    layout: Layout, catalogue: Catalogue, exceptions: Mapping[str, str]
) -> list[str]:
    """Each distributed table's column exists and is in every unique key (Citus enforces
    uniqueness per shard only); member tables form one group on member_id; only known
    exceptions are distributed by another column, outside that group."""
    problems = []
    for entry in layout.distributed.values():
        columns = catalogue.columns.get(entry.table)
        if columns is None:
            continue  # reported by decision_problems
        if entry.column not in columns:
            problems.append(f"{entry.table} is distributed by {entry.column}, not a column of it")
            continue
        problems.extend(
            f"{entry.table}: {why} (Citus enforces it per shard only)"
            for why in _keys_without(catalogue, entry.table, entry.column)
            if why != "has no primary key"
        )
        problems.extend(_group_problems(layout, entry, exceptions))
    problems.extend(_type_problems(layout, catalogue))
    problems.extend(
        f"{table} has a member_id column but is a reference table (a copy of every member's"
        " rows on every node): distribute it by member_id"
        for table in sorted(layout.reference)
        if MEMBER_COLUMN in catalogue.columns.get(table, {})
    )
    return problems


def _group_problems(layout: Layout, entry: Distributed, exceptions: Mapping[str, str]) -> list[str]:
    # the member group: the tables co-located with MEMBER_ANCHOR
    in_member_group = layout.group(entry.table) == MEMBER_ANCHOR
    if entry.table == MEMBER_ANCHOR:
        ok = entry.column == MEMBER_COLUMN and entry.colocate_with == "none"
        return [] if ok else [f"{MEMBER_ANCHOR} must start the group: member_id, 'none'"]
    if entry.column == MEMBER_COLUMN and not in_member_group:
        return [f"{entry.table} is distributed by member_id but not co-located with the group"]
    if entry.column != MEMBER_COLUMN and in_member_group:
        return [f"{entry.table} is distributed by {entry.column} inside the member group"]
    if entry.column != MEMBER_COLUMN and entry.table not in exceptions:
        return [
            f"{entry.table} is distributed by {entry.column}, not member_id: a departure from"
            " docs/design.md §5 belongs in KNOWN_EXCEPTIONS with its reason"
        ]
    return []


def _type_problems(layout: Layout, catalogue: Catalogue) -> list[str]:
    """Citus co-locates only tables whose distribution columns have one type."""
    types: dict[str, dict[str, str]] = {}
    for entry in layout.distributed.values():
        column_type = catalogue.columns.get(entry.table, {}).get(entry.column)
        if column_type is not None:
            types.setdefault(layout.group(entry.table), {})[entry.table] = column_type
    return [
        f"the colocation group of {group} mixes distribution column types: {members}"
        for group, members in sorted(types.items())
        if len(set(members.values())) > 1
    ]


def foreign_key_problems(layout: Layout, catalogue: Catalogue) -> list[str]:
    """What Citus accepts: distributed -> reference, distributed -> co-located distributed
    through the distribution columns, reference -> reference, local -> local or reference;
    and a referenced Citus table is created before the one that references it."""
    problems = []
    for fk in sorted(catalogue.foreign_keys, key=lambda f: (f.table, f.name)):
        src, dst = layout.placement(fk.table), layout.placement(fk.referenced)
        if src is None or dst is None:
            continue  # reported by decision_problems
        what = f"{fk.table} -> {fk.referenced} ({fk.name})"
        if (src, dst) == ("distributed", "distributed"):
            problems.extend(_distributed_pair_problems(layout, fk, what))
        elif (src, dst) not in _ALLOWED_REFERENCES:
            problems.append(f"{what}: Citus refuses a foreign key from a {src} to a {dst} table")
        if src != "local" and layout.position(fk.referenced) > layout.position(fk.table):
            problems.append(f"{what}: distribute.sql must place {fk.referenced} before it")
    return problems


_ALLOWED_REFERENCES = {
    ("distributed", "reference"),
    ("reference", "reference"),
    ("local", "local"),
    # needs the coordinator in the metadata (citus_set_coordinator_host); see the README
    ("local", "reference"),
}


def _distributed_pair_problems(layout: Layout, fk: ForeignKey, what: str) -> list[str]:
    src, dst = layout.distributed[fk.table], layout.distributed[fk.referenced]
    if layout.group(fk.table) != layout.group(fk.referenced):
        return [f"{what}: the two tables are not co-located"]
    if (src.column, dst.column) not in zip(fk.columns, fk.referenced_columns, strict=True):
        return [f"{what}: the key must pair {src.column} with {dst.column}"]
    return []
