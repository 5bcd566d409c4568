"""`membership apikey create|list|revoke`: the gateway's API keys.

Connects to DATABASE_URL, else the embedded PostgreSQL under --data-dir as `membership run`
does, and applies the gateway's migrations first (so keys can be made before the gateway has
ever started, e.g. the first admin key). A new key is printed once, on stdout alone, so that
`KEY=$(membership apikey create ...)` captures just the key; only its hash is stored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg

from gateway import keys
from gateway.store import migrate_schema
from membership_cli import launcher
from membership_cli.errors import EXIT_OK, CliError, usage_error
from services.runtime.db import MigrationChecksumError, SchemaTooNewError

T = TypeVar("T")
CONNECT_TIMEOUT_S = 10.0
MAX_TTL_DAYS = keys.MAX_TTL.days

EXIT_CODES = """\
exit codes:
  0  success (revoking a key already revoked is a success too)
  1  runtime failure (database unreachable, schema newer than this code, no such key)
  2  usage or configuration error (unknown role, bad name, malformed key id)
"""

APIKEY_EPILOG = f"""\
examples:
  membership apikey create --role wallet-backend --name ios-backend --ttl-days 90
  KEY=$(membership apikey create --role settlement --name acme-pay)
  membership apikey create --role admin --name ops --json | jq -r .key
  membership apikey list
  membership apikey list --json | jq -r '.keys[] | select(.status == "active") | .key_id'
  membership apikey revoke 3x7qk2mbfwh4ztda

Keys read wm_<key_id>_<secret> and are sent as `Authorization: Bearer <key>`. The key is
printed once and stored only as a hash: a lost key cannot be shown again; revoke it and
create another. The key id is public (lists, logs, revoke). A revoked key stops working on
every gateway within 30 seconds (the gateway's key cache).
roles: {", ".join(keys.ROLES)}

Without DATABASE_URL, the embedded PostgreSQL under --data-dir is used (as `membership run`).

{EXIT_CODES}"""


def _now() -> datetime:
    return datetime.now(UTC)


async def _with_connection(dsn: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    try:
        conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise CliError(f"cannot connect to the database ({type(exc).__name__})") from exc
    try:
        try:
            await migrate_schema(conn)
        except (SchemaTooNewError, MigrationChecksumError) as exc:
            raise CliError(str(exc)) from exc
        return await work(conn)
    finally:
        await conn.close()


def _run(args: argparse.Namespace, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    data_dir = launcher.prepare_data_dir(Path(args.data_dir))
    with launcher.database(data_dir, os.environ) as db:
        try:
            return asyncio.run(_with_connection(db.url, work))
        except asyncpg.PostgresError as exc:
            raise CliError(f"the database refused the change ({type(exc).__name__})") from exc


def _ttl(days: int | None) -> timedelta | None:
    return None if days is None else timedelta(days=days)


def cmd_create(args: argparse.Namespace) -> int:
    ttl = _ttl(args.ttl_days)
    try:
        # checked before any database is started or asked
        keys.check_request(args.name, args.role, ttl)
    except keys.KeyRequestError as exc:
        raise usage_error(str(exc)) from exc

    async def work(conn: asyncpg.Connection) -> tuple[keys.KeyRecord, str]:
        return await keys.create_key(conn, args.name, args.role, ttl)

    record, plaintext = _run(args, work)
    if args.json:
        print(json.dumps({"key": plaintext, **record.to_json(_now())}))
        return EXIT_OK
    print(plaintext)
    expires = record.expires_at.isoformat() if record.expires_at else "never"
    print(
        f"created API key {record.key_id} (role {record.role}, name {record.name!r}, "
        f"expires {expires}); the key above is shown only this once",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    async def work(conn: asyncpg.Connection) -> list[keys.KeyRecord]:
        return await keys.list_keys(conn)

    records = _run(args, work)
    now = _now()
    if len(records) >= keys.MAX_LIST:
        print(f"note: only the oldest {keys.MAX_LIST} keys are shown", file=sys.stderr)
    if args.json:
        print(json.dumps({"keys": [r.to_json(now) for r in records]}))
        return EXIT_OK
    print(_table(records, now))
    return EXIT_OK


def _short(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _table(records: list[keys.KeyRecord], now: datetime) -> str:
    header = ("KEY_ID", "ROLE", "STATUS", "CREATED", "EXPIRES", "LAST_USED", "NAME")
    rows = [header] + [
        (
            r.key_id,
            r.role,
            r.status(now),
            _short(r.created_at),
            _short(r.expires_at),
            _short(r.last_used_at),
            r.name,
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        key_id = keys.check_key_id(args.key_id)
    except keys.KeyRequestError as exc:
        raise usage_error(str(exc)) from exc
    now = _now()

    async def work(conn: asyncpg.Connection) -> keys.KeyRecord:
        return await keys.revoke_key(conn, key_id, now=now)

    try:
        record = _run(args, work)
    except keys.KeyNotFound as exc:
        raise CliError(str(exc)) from exc
    already = record.revoked_at != now
    if args.json:
        print(json.dumps({**record.to_json(now), "already_revoked": already}))
        return EXIT_OK
    revoked_at = _short(record.revoked_at)
    state = f"was already revoked at {revoked_at}" if already else f"revoked at {revoked_at}"
    print(f"API key {record.key_id} ({record.role}, {record.name!r}) {state}")
    return EXIT_OK


def _bounded_days(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number of days") from exc
    if not 1 <= value <= MAX_TTL_DAYS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_TTL_DAYS}")
    return value


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    handler: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=APIKEY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    parser.add_argument(
        "--data-dir", default=str(launcher.DEFAULT_DATA_DIR), help="default %(default)s"
    )
    return parser


def add_apikey(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`membership apikey ...`: the gateway's API keys."""
    summary = "create, list and revoke the gateway's API keys"
    apikey = subparsers.add_parser(
        "apikey",
        help=summary,
        description=summary,
        epilog=APIKEY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = apikey.add_subparsers(dest="apikey_command", required=True, metavar="COMMAND")
    create = _command(commands, "create", "create a key and print it once", cmd_create)
    create.add_argument("--role", required=True, choices=keys.ROLES, help="the caller's role")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument(
        "--ttl-days", type=_bounded_days, help="expire after this many days (default: never)"
    )
    create.add_argument("--json", action="store_true", help="print the key and its record")
    listing = _command(commands, "list", "list the keys (never their secrets)", cmd_list)
    listing.add_argument("--json", action="store_true", help="print the keys as JSON")
    revoke = _command(commands, "revoke", "revoke a key for good", cmd_revoke)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key id, as `apikey list` shows")
    revoke.add_argument("--json", action="store_true", help="print the revoked key as JSON")
