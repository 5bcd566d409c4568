"""What every group of points RPCs shares: the domain objects and a clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg
from google.protobuf import timestamp_pb2

from services.points.ledger import Ledger
from services.points.member_events import MemberDirectory
from services.points.unknown_members import is_member_unknown
from services.runtime.errors import DomainError

T = TypeVar("T")


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

    async def for_known_member(self, member_id: str, write: Awaitable[T]) -> T:
        """Awaits a write; a refusal because points does not know the member yet becomes
        the answer unknown_members.refusal gives (retryable, or final after the grace)."""
        try:
            return await write
        except DomainError as err:
            if not is_member_unknown(err):
                raise
            raise await self.deps.members.refusal(member_id, self.deps.clock()) from None


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts
