"""The `membership` operator command: subcommands, examples in --help, stable exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from membership_cli import (
    apikey,
    backup,
    campaigns,
    launcher,
    points_jobs,
    restore,
    status,
    tokens,
)
from membership_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError, usage_error
from membership_cli.health import SERVING, probe_all
from services.runtime.access import ROLE_SCOPES
from services.runtime.config import ConfigError, load_settings

EXIT_CODES = """\
exit codes:
  0  success
  1  runtime failure (a service is down, did not start, or died)
  2  usage or configuration error
"""

MAIN_EPILOG = f"""\
examples:
  membership run                          start the whole suite locally (Ctrl-C stops it)
  membership health                       is every service SERVING?
  membership status                       health, versions, schema, job lag, overdue requests
  TOKEN=$(membership token --role admin)  a caller token for grpcurl and friends
  membership points run-jobs --now 2030-01-01T00:00:00Z   run the points jobs once
  membership backup --output m.dump       a consistent backup (restore: membership restore)

{EXIT_CODES}"""

TOKEN_EPILOG = f"""\
examples:
  membership token --role admin
  membership token --role wallet-backend --ttl-s 600 --subject app:ios
  membership token --role officer --json | jq -r .expires_at

roles: {", ".join(sorted(ROLE_SCOPES))}
The signing key is read from MEMBERSHIP_KEYS_DIR (default .data/keys).

{EXIT_CODES}"""

RUN_EPILOG = f"""\
examples:
  membership run                              embedded PostgreSQL under .data/pg
  DATABASE_URL=postgresql://... membership run
  MEMBERSHIP_ACCOUNTS_ADDR=127.0.0.1:6051 membership run --data-dir /tmp/m --json

Without DATABASE_URL, an embedded PostgreSQL is started under <data-dir>/pg and reused by
later runs. Listen addresses come from MEMBERSHIP_{{ACCOUNTS,POINTS,PRIVACY}}_ADDR.
With --json, one JSON object is printed on stdout once every service is SERVING.

{EXIT_CODES}"""

HEALTH_EPILOG = f"""\
examples:
  membership health
  membership health --json | jq -r '.services.accounts.status'

Addresses come from MEMBERSHIP_{{ACCOUNTS,POINTS,PRIVACY}}_ADDR.

{EXIT_CODES}"""

STATUS_EPILOG = f"""\
examples:
  membership status
  membership status --json | jq '.services.privacy.data_requests_overdue'

Per service: gRPC health, version, schema version (database/code), job lag, outbox backlog
and overdue data-subject requests, read from each service's metrics endpoint
(MEMBERSHIP_<NAME>_METRICS_ADDR, default: its gRPC port + 1000, as `membership run` sets).
Exit code 1 when a service is not SERVING, its metrics cannot be read or its schema is
not the code's.

{EXIT_CODES}"""

Handler = Callable[[argparse.Namespace], int]


def _bounded_float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from exc
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _keys_dir(override: str | None) -> tuple[Path, str]:
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    return (Path(override) if override else settings.keys_dir), settings.token_audience


def cmd_token(args: argparse.Namespace) -> int:
    subject = args.subject or tokens.default_subject(args.role)
    tokens.check_request(args.role, args.ttl_s, subject, args.internal)
    keys_dir, audience = _keys_dir(args.keys_dir)
    issued = tokens.mint(args.role, args.ttl_s, subject, keys_dir, audience, args.internal)
    if args.json:
        print(json.dumps(issued.__dict__))
    else:
        print(issued.token)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    options = launcher.RunOptions(Path(args.data_dir), args.startup_timeout_s, args.json)
    return launcher.run(options)


def cmd_health(args: argparse.Namespace) -> int:
    addrs = launcher.service_addrs()  # the services and the gateway's gRPC side
    statuses = probe_all(addrs, args.timeout_s)
    healthy = all(status == SERVING for status in statuses.values())
    if args.json:
        services = {name: {"addr": addrs[name], "status": s} for name, s in statuses.items()}
        print(json.dumps({"ok": healthy, "services": services}))
    else:
        for name, status in statuses.items():
            print(f"{name:<9} {addrs[name]:<21} {status}")
    return EXIT_OK if healthy else EXIT_FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    found = status.suite_status(launcher.service_addrs(), launcher.metrics_addrs(), args.timeout_s)
    print(status.as_json(found) if args.json else status.as_table(found))
    return EXIT_OK if all(s.ok for s in found.values()) else EXIT_FAILURE


def _subparser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    epilog: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler)
    return parser


def _add_token(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = _subparser(subparsers, "token", "print a caller token", TOKEN_EPILOG, cmd_token)
    parser.add_argument("--role", required=True, help="caller role (see the list below)")
    parser.add_argument("--ttl-s", type=int, default=tokens.DEFAULT_TTL_S, help="lifetime")
    parser.add_argument("--subject", help="token subject (default cli:<role>)")
    parser.add_argument("--keys-dir", help="signing key directory (default MEMBERSHIP_KEYS_DIR)")
    parser.add_argument("--json", action="store_true", help="print token, expiry and scopes")
    parser.add_argument(
        "--internal", action="store_true", help="allow a service:* role (for debugging services)"
    )


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "run the whole suite locally until Ctrl-C"
    parser = _subparser(subparsers, "run", summary, RUN_EPILOG, cmd_run)
    parser.add_argument(
        "--data-dir", default=str(launcher.DEFAULT_DATA_DIR), help="default %(default)s"
    )
    parser.add_argument(
        "--startup-timeout-s",
        type=_bounded_float(1, 600),
        default=launcher.DEFAULT_STARTUP_TIMEOUT_S,
        help="how long the services may take to report SERVING (default %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="print the endpoints as JSON")


def _add_health(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "check every service's gRPC health"
    parser = _subparser(subparsers, "health", summary, HEALTH_EPILOG, cmd_health)
    parser.add_argument(
        "--timeout-s",
        type=_bounded_float(0.1, 60),
        default=2.0,
        help="deadline of each check (default %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="print the statuses as JSON")


def _add_status(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "one screen with the suite's health, versions, job lag and overdue requests"
    parser = _subparser(subparsers, "status", summary, STATUS_EPILOG, cmd_status)
    parser.add_argument(
        "--timeout-s",
        type=_bounded_float(0.1, 60),
        default=status.DEFAULT_TIMEOUT_S,
        help="deadline of each check and scrape (default %(default)g)",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="membership",
        description="Operate the wallet-membership suite.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(subparsers)
    _add_health(subparsers)
    _add_status(subparsers)
    _add_token(subparsers)
    points_jobs.add_points(subparsers)
    campaigns.add_campaigns(subparsers)
    backup.add_backup(subparsers)
    restore.add_restore(subparsers)
    apikey.add_apikey(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"membership {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ConfigError as exc:
        print(f"membership {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
