"""Wiring of membership.points.v1.PointsService: `SPEC` for the runtime, the use cases built
once from the settings, and the servicer as the sum of one mixin per topic (server_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc
from membership.points.v1 import promotions_pb2 as ppb
from membership.points.v1 import promotions_pb2_grpc as ppb_grpc

from services.points import metrics as points_metrics
from services.points import settings as points_settings
from services.points.balance import Balances
from services.points.campaigns import Campaigns
from services.points.checkout import Checkout
from services.points.coupons import Coupons
from services.points.domain.rules import RulesInForce
from services.points.grants import Grants
from services.points.jobs import JobLoop, JobRunner
from services.points.ledger_export import LedgerExport
from services.points.ledger_stream import LedgerStream
from services.points.members import MemberDirectory
from services.points.processing_pauses import ProcessingPauses
from services.points.program import Program, load_rules_in_force
from services.points.reconcile import Reconciler
from services.points.refunds import Refunds
from services.points.restrictions import Restrictions
from services.points.rewards import Rewards, sync_rewards
from services.points.server_balance import BalanceRpcs
from services.points.server_base import PointsDeps
from services.points.server_campaigns import PromotionsServicer
from services.points.server_grants import GrantRpcs
from services.points.server_ledger_export import LedgerExportRpcs
from services.points.server_members import MemberRpcs
from services.points.server_processing_pauses import ProcessingPauseRpcs
from services.points.server_program import ProgramRpcs
from services.points.server_reconcile import ReconcileRpcs
from services.points.server_refunds import RefundRpcs
from services.points.server_restrictions import RestrictionRpcs
from services.points.server_rewards import RewardRpcs
from services.points.server_settlement import SettlementRpcs
from services.points.server_spending import SpendingRpcs
from services.points.server_tiers import TierRpcs
from services.points.server_transactions import TransactionRpcs
from services.points.settlement import Settlement
from services.points.spending import Spending
from services.points.tiers import Tiers
from services.points.transactions import Transactions
from services.runtime.config import Settings
from services.runtime.server import ServiceSpec


class PointsServicer(
    SettlementRpcs,
    BalanceRpcs,
    GrantRpcs,
    RefundRpcs,
    SpendingRpcs,
    TransactionRpcs,
    ReconcileRpcs,
    RewardRpcs,
    TierRpcs,
    MemberRpcs,
    ProcessingPauseRpcs,
    LedgerExportRpcs,
    RestrictionRpcs,
    ProgramRpcs,
    pb_grpc.PointsServiceServicer,
):
    """Every RPC of PointsService; each mixin maps one topic."""


def system_clock() -> datetime:
    return datetime.now(UTC)


class PointsComponent:
    service_names: Sequence[str] = (
        pb.DESCRIPTOR.services_by_name["PointsService"].full_name,
        ppb.DESCRIPTOR.services_by_name["PromotionsService"].full_name,
    )

    def __init__(self, deps: PointsDeps, jobs: JobLoop) -> None:
        self.deps = deps
        self.jobs = jobs

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PointsServiceServicer_to_server(PointsServicer(self.deps), server)
        ppb_grpc.add_PromotionsServiceServicer_to_server(
            PromotionsServicer(self.deps.campaigns, self.deps.coupons, self.deps.checkout), server
        )
        # background work starts with serving (add_to runs inside the server's event loop)
        self.jobs.start()

    async def close(self) -> None:
        await self.jobs.stop()


def use_cases(
    pool: asyncpg.Pool,
    rules: RulesInForce,
    config: points_settings.PointsSettings,
    clock: Callable[[], datetime],
) -> PointsDeps:
    """Every use case, once: the servicer's mixins share them."""
    members = MemberDirectory(pool, config.unknown_member_grace_s, clock)
    return PointsDeps(
        rules=rules,
        members=members,
        settlement=Settlement(pool, members, rules, clock, config.settlement_linger_s),
        balances=Balances(pool, members, clock),
        refunds=Refunds(pool, rules, clock),
        grants=Grants(pool, rules, clock),
        spending=Spending(pool, members, rules, clock),
        rewards=Rewards(pool, members, rules, clock),
        transactions=Transactions(pool),
        reconciler=Reconciler(pool),
        tiers=Tiers(pool, members, rules, clock),
        processing_pauses=ProcessingPauses(pool),
        restrictions=Restrictions(pool, clock),
        ledger_export=LedgerExport(pool, clock),
        ledger_stream=LedgerStream(pool, clock),
        program=Program(pool, rules, clock),
        campaigns=Campaigns(pool, rules, clock),
        coupons=Coupons(pool, rules, clock),
        checkout=Checkout(pool, rules, clock),
        clock=clock,
    )


async def build(pool: asyncpg.Pool, settings: Settings) -> PointsComponent:
    config = points_settings.load(settings)
    rules = await load_rules_in_force(pool, config.rules_file)
    # the catalogue names tiers of these rules
    await sync_rewards(pool, rules, config.rewards_file)
    deps = use_cases(pool, rules, config, system_clock)
    jobs = JobLoop(JobRunner(pool), system_clock, config.jobs_interval_s)
    return PointsComponent(deps, jobs)


SPEC = ServiceSpec(
    name="points",
    migrations_dir=Path(__file__).parent / "migrations",
    build=build,
    probes=points_metrics.PROBES,
)
