"""What every group of points RPCs shares: the use cases, built once by server.py, and the
clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from services.points.balance import Balances
from services.points.campaigns import Campaigns
from services.points.checkout import Checkout
from services.points.coupons import Coupons
from services.points.domain.rules import RulesInForce
from services.points.grants import Grants
from services.points.ledger_export import LedgerExport
from services.points.ledger_stream import LedgerStream
from services.points.members import MemberDirectory
from services.points.processing_pauses import ProcessingPauses
from services.points.program import Program
from services.points.reconcile import Reconciler
from services.points.refunds import Refunds
from services.points.restrictions import Restrictions
from services.points.rewards import Rewards
from services.points.settlement import Settlement
from services.points.spending import Spending
from services.points.tiers import Tiers
from services.points.transactions import Transactions

T = TypeVar("T")


@dataclass(frozen=True)
class PointsDeps:
    rules: RulesInForce
    members: MemberDirectory
    settlement: Settlement
    balances: Balances
    refunds: Refunds
    grants: Grants
    spending: Spending
    rewards: Rewards
    transactions: Transactions
    reconciler: Reconciler
    tiers: Tiers
    processing_pauses: ProcessingPauses
    restrictions: Restrictions
    ledger_export: LedgerExport
    ledger_stream: LedgerStream
    program: Program
    campaigns: Campaigns
    coupons: Coupons
    checkout: Checkout
    clock: Callable[[], datetime]


class RpcGroup:
    """Base of the mixins that make up PointsServicer, one per topic (settlement, members,
    refunds, ...), so that each stays small and the servicer is their sum."""

    def __init__(self, deps: PointsDeps) -> None:
        self.deps = deps

    async def for_known_member(self, member_id: str, write: Awaitable[T]) -> T:
        """Awaits a write; a refusal because points does not know the member yet becomes
        the answer unknown_members gives (retryable, or final after the grace)."""
        return await self.deps.members.for_known_member(member_id, write)
