"""Points test support: program rules files and a second points service that uses them."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from membership.points.v1 import points_pb2_grpc

from services.points.server import SPEC as POINTS
from services.points.settings import DEFAULT_RULES_FILE, RULES_FILE_ENV
from services.runtime.server import start_service
from tests.support.suite import Suite


def rules_file(folder: Path, **values: str) -> Path:
    """The default rules with some top-level values replaced (TOML syntax: strings quoted)."""
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8")
    for key, value in values.items():
        text, found = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, flags=re.MULTILINE)
        assert found == 1, key
    path = folder / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def points_with_rules(
    suite: Suite, rules: Path
) -> AsyncIterator[points_pb2_grpc.PointsServiceStub]:
    """A second points service on the suite's database whose program rules are `rules`
    (recorded as a new rule version, as a deployment with new rules would)."""
    env = {**suite.settings.env, RULES_FILE_ENV: str(rules)}
    settings = dataclasses.replace(suite.settings, env=env)
    service = await start_service(POINTS, settings, "127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    try:
        yield points_pb2_grpc.PointsServiceStub(channel)
    finally:
        await channel.close()
        await service.stop(0.2)
