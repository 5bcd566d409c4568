"""`membership campaigns ...` against a running points service: the operator's way to run
a member day from a JSON file, and the errors it prints."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from membership_cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from membership_cli.main import main
from tests.service.test_points_settlement import NOW, known_member, payment, settler
from tests.support.suite import Suite


def terms(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "displayName": "Member day",
        "startTime": (NOW - timedelta(days=1)).isoformat(),
        "endTime": (NOW + timedelta(days=5)).isoformat(),
        "effect": {"kind": "KIND_FIXED_POINTS", "points": "30"},
        "audience": {"merchantIds": ["cli-shop"]},
        "budget": {"perMember": {"awards": "1"}},
    }
    doc.update(changes)
    return doc


async def cli(suite: Suite, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The command in a thread (its gRPC calls are blocking; the services run in this
    loop), aimed at the suite's points service with a token from its signing key."""
    target = ["--addr", f"127.0.0.1:{suite.points_service.port}", "--keys-dir", str(suite.keys_dir)]
    code = await asyncio.to_thread(main, ["campaigns", *argv, *target])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_a_member_day_from_a_file(
    suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "member-day.json"
    file.write_text(json.dumps(terms()), encoding="utf-8")
    code, out, _ = await cli(suite, capsys, "create", "cli-day", "--file", str(file))
    assert code == EXIT_OK and json.loads(out)["state"] == "STATE_DRAFT"
    code, out, _ = await cli(suite, capsys, "activate", "cli-day")
    assert code == EXIT_OK and json.loads(out)["state"] == "STATE_ACTIVE"
    member_id = await known_member(suite)
    request = payment(member_id, "cli-1", 1000, "retail")
    request.merchant_id = "cli-shop"
    settled = await suite.points.SettlePayment(request, metadata=settler(suite))
    assert settled.points == 10 + 30
    code, out, _ = await cli(suite, capsys, "list", "--state", "ACTIVE")
    assert code == EXIT_OK and "cli-day" in out and "ACTIVE" in out
    code, out, _ = await cli(suite, capsys, "get", "cli-day")
    assert json.loads(out)["pointsGiven"] == "30"
    code, out, _ = await cli(suite, capsys, "end", "cli-day")
    assert code == EXIT_OK and json.loads(out)["state"] == "STATE_ENDED"
    # the same terms over the last days' payments: the one settled above would have got 30
    until = datetime.now(UTC).isoformat()
    period = ["--from", (NOW - timedelta(days=1)).isoformat(), "--to", until]
    code, out, _ = await cli(suite, capsys, "simulate", "--file", str(file), *period)
    assert code == EXIT_OK, out
    simulated = json.loads(out)
    assert (simulated["points"], simulated["paymentsReached"]) == ("30", "1")
    code, out, _ = await cli(suite, capsys, "simulate", *period)
    assert code == EXIT_USAGE


async def test_errors_name_the_fault(
    suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(terms(effect={"kind": "KIND_MULTIPLIER", "multiplierBps": 5})))
    code, _, err = await cli(suite, capsys, "create", "cli-bad", "--file", str(bad))
    assert code == EXIT_FAILURE
    assert "INVALID_ARGUMENT" in err and "campaign.effect.multiplier_bps" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"displayName": "x", "noSuchField": 1}')
    code, _, err = await cli(suite, capsys, "create", "cli-x", "--file", str(broken))
    assert code == EXIT_USAGE and "not a Campaign" in err
    code, _, err = await cli(suite, capsys, "create", "cli-x", "--file", str(tmp_path / "no"))
    assert code == EXIT_USAGE and "cannot read" in err
    code, _, err = await cli(suite, capsys, "activate", "no-such-campaign")
    assert code == EXIT_FAILURE and "NOT_FOUND" in err
