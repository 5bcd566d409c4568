"""What every group of points RPCs shares: the domain objects and a clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from google.protobuf import timestamp_pb2

from services.points.ledger import Ledger
from services.points.member_events import MemberDirectory


@dataclass(frozen=True)
class PointsDeps:
    pool: asyncpg.Pool
    ledger: Ledger
    members: MemberDirectory
    clock: Callable[[], datetime]


class RpcGroup:
    """Base of the mixins that make up PointsServicer, one per topic (settlement, members,
    refunds, ...), so that each stays small and the servicer is their sum."""

    def __init__(self, deps: PointsDeps) -> None:
        self.deps = deps


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
