"""points service: answers health checks until the ledger lands."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import asyncpg
import grpc

from services.runtime.config import Settings
from services.runtime.server import ServiceSpec


class PointsComponent:
    service_names: Sequence[str] = ()

    def add_to(self, server: grpc.aio.Server) -> None:
        pass

    async def close(self) -> None:
        pass


async def build(pool: asyncpg.Pool, settings: Settings) -> PointsComponent:
    return PointsComponent()


SPEC = ServiceSpec(name="points", migrations_dir=Path(__file__).parent / "migrations", build=build)
