"""`membership campaigns ...`: the membership team's campaigns, through the points service's
PromotionsService (gRPC), as the `marketing` role.

The caller token is `--token` (or MEMBERSHIP_TOKEN); without one, a short-lived `marketing`
token is minted from the suite's signing key (MEMBERSHIP_KEYS_DIR), as `membership token`
does, so this works on the machine that runs the suite. Terms are a JSON file in the
proto3 JSON form of membership.points.v1.Campaign; answers are printed in that form.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from membership.points.v1 import promotions_pb2 as ppb
from membership.points.v1 import promotions_pb2_grpc as ppb_grpc

from membership_cli import launcher, tokens
from membership_cli.errors import EXIT_OK, CliError, usage_error
from membership_cli.points_jobs import parse_now
from services.runtime.config import ConfigError, load_settings

TOKEN_ENV = "MEMBERSHIP_TOKEN"  # noqa: S105 (the name of a variable, not a secret)
ROLE = "marketing"
TOKEN_TTL_S = 300
TIMEOUT_S = 10.0
MAX_FILE_BYTES = 256 * 1024

EPILOG = """\
examples:
  membership campaigns create double-8th --file member-day.json
  membership campaigns activate double-8th
  membership campaigns list --state ACTIVE
  membership campaigns get double-8th
  membership campaigns update double-8th --file member-day-v2.json
  membership campaigns end double-8th
  membership campaigns simulate double-8th --from 2026-11-01T00:00:00+08:00 \
      --to 2026-12-01T00:00:00+08:00

member-day.json (proto3 JSON of membership.points.v1.Campaign):
  {"displayName": "Member day", "startTime": "2026-12-01T00:00:00+08:00",
   "endTime": "2027-01-01T00:00:00+08:00", "schedule": {"daysOfMonth": [8]},
   "effect": {"kind": "KIND_MULTIPLIER", "multiplierBps": 20000},
   "budget": {"total": {"points": "1000000"}, "perMember": {"awards": "3"}}}

exit codes:
  0  success
  1  the service refused or failed (its code, reason and the fields at fault are printed)
  2  usage error (a missing or unreadable file, bad JSON, an unknown field)
"""


def _terms(path: str) -> ppb.Campaign:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            raise usage_error(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise usage_error(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return json_format.Parse(text, ppb.Campaign())
    except json_format.ParseError as exc:
        raise usage_error(f"{path}: not a Campaign in proto3 JSON: {exc}") from exc


def _token(args: argparse.Namespace) -> str:
    given = args.token or os.environ.get(TOKEN_ENV, "")
    if given:
        return str(given)
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise usage_error(str(exc)) from exc
    keys_dir = Path(args.keys_dir) if args.keys_dir else settings.keys_dir
    subject = tokens.default_subject(ROLE)
    issued = tokens.mint(ROLE, TOKEN_TTL_S, subject, keys_dir, settings.token_audience)
    return issued.token


def _failure(err: grpc.RpcError) -> CliError:
    """The refusal in one line: code, reason, message, and each field at fault."""
    code = err.code().name if isinstance(err, grpc.Call) else "UNKNOWN"
    details = err.details() if isinstance(err, grpc.Call) else str(err)
    parts = [f"{code}: {details}"]
    trailers = err.trailing_metadata() if isinstance(err, grpc.Call) else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            parts += _detail_lines(value)
    return CliError("; ".join(parts))


def _detail_lines(raw: bytes) -> list[str]:
    status = status_pb2.Status.FromString(raw)
    lines = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            lines.append(f"reason {info.reason}")
        elif detail.Unpack(bad):
            lines += [f"{v.field}: {v.description}" for v in bad.field_violations]
    return lines


def _call(args: argparse.Namespace, rpc: str, request: Message) -> Any:
    """One call of PromotionsService's `rpc`; a refusal becomes a CliError."""
    addr = args.addr or launcher.service_addrs()["points"]
    metadata = (("authorization", f"Bearer {_token(args)}"),)
    with grpc.insecure_channel(addr) as channel:
        method = getattr(ppb_grpc.PromotionsServiceStub(channel), rpc)
        try:
            return method(request, metadata=metadata, timeout=TIMEOUT_S)
        except grpc.RpcError as err:
            raise _failure(err) from err


def _print(message: Message) -> None:
    doc = json_format.MessageToDict(message, preserving_proto_field_name=False)
    json.dump(doc, sys.stdout, ensure_ascii=False, indent=2)
    print()


def _name(campaign_id: str) -> str:
    return f"campaigns/{campaign_id}"


def cmd_create(args: argparse.Namespace) -> int:
    request = ppb.CreateCampaignRequest(campaign_id=args.campaign_id, campaign=_terms(args.file))
    _print(_call(args, "CreateCampaign", request))
    return EXIT_OK


def cmd_update(args: argparse.Namespace) -> int:
    terms = _terms(args.file)
    terms.name = _name(args.campaign_id)
    request = ppb.UpdateCampaignRequest(campaign=terms)
    _print(_call(args, "UpdateCampaign", request))
    return EXIT_OK


def cmd_activate(args: argparse.Namespace) -> int:
    request = ppb.ActivateCampaignRequest(name=_name(args.campaign_id))
    _print(_call(args, "ActivateCampaign", request))
    return EXIT_OK


def cmd_end(args: argparse.Namespace) -> int:
    request = ppb.EndCampaignRequest(name=_name(args.campaign_id))
    _print(_call(args, "EndCampaign", request))
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    request = ppb.GetCampaignRequest(name=_name(args.campaign_id))
    _print(_call(args, "GetCampaign", request))
    return EXIT_OK


def _time(raw: str, flag: str) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromDatetime(parse_now(raw))
    except CliError as exc:
        raise usage_error(f"{flag}: {exc}") from exc
    return stamp


def cmd_simulate(args: argparse.Namespace) -> int:
    request = ppb.SimulateCampaignRequest(
        start_time=_time(args.start, "--from"), end_time=_time(args.end, "--to")
    )
    if args.file:
        request.campaign.CopyFrom(_terms(args.file))
    elif args.campaign_id:
        request.name = _name(args.campaign_id)
    else:
        raise usage_error("name a campaign, or give its terms with --file")
    _print(_call(args, "SimulateCampaign", request))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    states = [ppb.Campaign.State.Value(f"STATE_{s}") for s in args.state]
    token = ""
    while True:  # every page: a program has at most a few hundred campaigns
        request = ppb.ListCampaignsRequest(states=states, page_size=200, page_token=token)
        page = _call(args, "ListCampaigns", request)
        for campaign in page.campaigns:
            state = ppb.Campaign.State.Name(campaign.state).removeprefix("STATE_")
            print(
                f"{campaign.name.removeprefix('campaigns/'):<40} {state:<7}"
                f" v{campaign.version:<3} {campaign.display_name}"
            )
        token = page.next_page_token
        if not token:
            return EXIT_OK


def add_campaigns(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    summary = "create, activate, end and list the program's campaigns"
    parser = subparsers.add_parser(
        "campaigns",
        help=summary,
        description=summary + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="campaigns_command", required=True, metavar="COMMAND")
    for name, handler, needs_file in (
        ("create", cmd_create, True),
        ("update", cmd_update, True),
        ("activate", cmd_activate, False),
        ("end", cmd_end, False),
        ("get", cmd_get, False),
    ):
        command = commands.add_parser(name, help=f"{name} a campaign")
        command.set_defaults(handler=handler)
        command.add_argument("campaign_id")
        if needs_file:
            command.add_argument("--file", required=True, help="the terms, proto3 JSON")
        _common(command)
    simulate = commands.add_parser(
        "simulate", help="run a campaign's terms over a past period's payments (writes nothing)"
    )
    simulate.set_defaults(handler=cmd_simulate)
    simulate.add_argument("campaign_id", nargs="?", default="")
    simulate.add_argument("--file", help="terms not stored yet, proto3 JSON")
    simulate.add_argument("--from", dest="start", required=True, help="ISO 8601 with a zone")
    simulate.add_argument("--to", dest="end", required=True, help="ISO 8601 with a zone")
    _common(simulate)
    listing = commands.add_parser("list", help="list campaigns")
    listing.set_defaults(handler=cmd_list)
    listing.add_argument(
        "--state", action="append", default=[], choices=("DRAFT", "ACTIVE", "ENDED")
    )
    _common(listing)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--addr", help="the points service (default: as `membership run`)")
    parser.add_argument("--token", help=f"a caller token (default: ${TOKEN_ENV}, else minted)")
    parser.add_argument("--keys-dir", help="where the signing key is (default: the settings')")
