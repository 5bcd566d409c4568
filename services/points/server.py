"""gRPC <-> domain for membership.points.v1.PointsService: the servicer is the sum of one
mixin per topic (server_*.py); this module wires them to the domain and the runtime."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points import metrics as points_metrics
from services.points import rules as program_rules
from services.points import settings as points_settings
from services.points.jobs import JobLoop, JobRunner
from services.points.ledger import Ledger, RulesInForce
from services.points.member_events import MemberDirectory
from services.points.server_base import PointsDeps
from services.points.server_grants import GrantRpcs
from services.points.server_members import MemberEventRpcs
from services.points.server_privacy import PrivacyRpcs
from services.points.server_reconcile import ReconcileRpcs
from services.points.server_refunds import RefundRpcs
from services.points.server_rewards import RewardRpcs, sync_rewards
from services.points.server_rules import RulesRpcs
from services.points.server_settlement import SettlementRpcs
from services.points.server_spending import SpendingRpcs
from services.points.server_tiers import TierRpcs
from services.points.server_transactions import TransactionRpcs
from services.points.store.rules import register_rules
from services.runtime.config import Settings
from services.runtime.server import ServiceSpec


class PointsServicer(
    SettlementRpcs,
    GrantRpcs,
    RefundRpcs,
    SpendingRpcs,
    TransactionRpcs,
    ReconcileRpcs,
    RewardRpcs,
    TierRpcs,
    MemberEventRpcs,
    PrivacyRpcs,
    RulesRpcs,
    pb_grpc.PointsServiceServicer,
):
    """Every RPC of PointsService; each mixin maps one topic."""


def system_clock() -> datetime:
    return datetime.now(UTC)


class PointsComponent:
    service_names: Sequence[str] = (pb.DESCRIPTOR.services_by_name["PointsService"].full_name,)

    def __init__(self, deps: PointsDeps, jobs: JobLoop) -> None:
        self.deps = deps
        self.jobs = jobs

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PointsServiceServicer_to_server(PointsServicer(self.deps), server)
        # background work starts with serving (add_to runs inside the server's event loop)
        self.jobs.start()

    async def close(self) -> None:
        await self.jobs.stop()


async def load_rules_in_force(pool: asyncpg.Pool, path: Path) -> RulesInForce:
    """Parses the rules file and records it as a new version if it changed."""
    rules = program_rules.load_rules_file(path)
    async with pool.acquire() as conn:
        version = await register_rules(conn, rules.digest(), rules.document())
    return RulesInForce(version, rules)


async def build(pool: asyncpg.Pool, settings: Settings) -> PointsComponent:
    config = points_settings.load(settings)
    rules = await load_rules_in_force(pool, config.rules_file)
    # the catalogue names tiers of these rules
    await sync_rewards(pool, rules, config.rewards_file)
    members = MemberDirectory(pool, config.unknown_member_grace_s)
    ledger = Ledger(pool, members, rules, system_clock)
    jobs = JobLoop(JobRunner(pool), system_clock, config.jobs_interval_s)
    return PointsComponent(PointsDeps(pool, ledger, members, system_clock), jobs)


SPEC = ServiceSpec(
    name="points",
    migrations_dir=Path(__file__).parent / "migrations",
    build=build,
    probes=points_metrics.PROBES,
)
