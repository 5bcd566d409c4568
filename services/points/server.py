"""gRPC <-> domain for membership.points.v1.PointsService."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc

from services.points import rules as program_rules
from services.points.ledger import ItemOutcome, Ledger, RulesInForce
from services.points.member_events import MemberDirectory, MemberEvent
from services.points.settlement import PointsState, SettlementResult
from services.points.store.rules import register_rules
from services.points.validation import batch_size, payment_of, payment_or_error
from services.runtime.config import Settings
from services.runtime.errors import DomainError, ViolationCollector
from services.runtime.names import member_id_of, member_name
from services.runtime.server import ServiceSpec
from services.runtime.status import rpc_code_number

RULES_FILE_ENV = "MEMBERSHIP_POINTS_RULES_FILE"
MAX_EVENTS = 500
STATE_TO_PB = {
    PointsState.PENDING: pb.POINTS_STATE_PENDING,
    PointsState.AVAILABLE: pb.POINTS_STATE_AVAILABLE,
    PointsState.NONE: pb.POINTS_STATE_NONE,
}
EVENT_TYPES = {
    pb.MEMBER_EVENT_TYPE_REGISTERED: "REGISTERED",
    pb.MEMBER_EVENT_TYPE_STATUS_CHANGED: "STATUS_CHANGED",
}
MEMBER_STATES = {
    pb.MEMBER_STATE_ACTIVE: "ACTIVE",
    pb.MEMBER_STATE_FROZEN: "FROZEN",
    pb.MEMBER_STATE_CLOSED: "CLOSED",
    pb.MEMBER_STATE_ERASED: "ERASED",
}


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def settlement_pb(result: SettlementResult) -> pb.Settlement:
    return pb.Settlement(
        name=f"{member_name(result.member_id)}/settlements/{result.payment_id}",
        points=result.points,
        state=STATE_TO_PB[result.state],
        available_time=_timestamp(result.available_at),
        expire_time=_timestamp(result.expires_at),
        tier_multiplier_bps=result.tier_multiplier_bps,
        rule_version=result.rule_version,
        transaction=(
            f"{member_name(result.member_id)}/transactions/{result.txn_id}"
            if result.points > 0 and result.txn_id is not None
            else ""
        ),
    )


def outcome_pb(outcome: ItemOutcome | DomainError) -> pb.SettlePaymentResult:
    if isinstance(outcome, DomainError):
        error: DomainError | None = outcome
    elif outcome.result is not None:
        return pb.SettlePaymentResult(settlement=settlement_pb(outcome.result))
    else:
        error = outcome.error
    assert error is not None
    return pb.SettlePaymentResult(
        error_code=rpc_code_number(error), error_reason=error.reason, error_message=error.message
    )


def _event_of(v: ViolationCollector, i: int, event: pb.MemberEvent) -> MemberEvent:
    member_id = member_id_of(v, event.member, f"events[{i}].member")
    referred_by = ""
    if event.referred_by:
        referred_by = member_id_of(v, event.referred_by, f"events[{i}].referred_by")
    if event.event_id <= 0:
        v.add(f"events[{i}].event_id", "must be positive")
    if event.type not in EVENT_TYPES:
        v.add(f"events[{i}].type", "unknown event type")
    if event.state not in MEMBER_STATES:
        v.add(f"events[{i}].state", "unknown member state")
    return MemberEvent(
        event_id=event.event_id,
        member_id=member_id,
        type=EVENT_TYPES.get(event.type, ""),
        state=MEMBER_STATES.get(event.state, ""),
        referred_by=referred_by or None,
        event_time=event.event_time.ToDatetime(tzinfo=UTC),
    )


class PointsServicer(pb_grpc.PointsServiceServicer):
    def __init__(
        self, ledger: Ledger, members: MemberDirectory, clock: Callable[[], datetime]
    ) -> None:
        self._ledger = ledger
        self._members = members
        self._clock = clock

    async def SettlePayment(
        self, request: pb.SettlePaymentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Settlement:
        return settlement_pb(await self._ledger.settle(payment_of(request, self._clock())))

    async def SettlePayments(
        self, request: pb.SettlePaymentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlePaymentsResponse:
        v = ViolationCollector()
        batch_size(v, len(request.requests))
        v.raise_if_any()
        now = self._clock()
        parsed = [payment_or_error(r, now) for r in request.requests]
        valid = [p for p in parsed if not isinstance(p, DomainError)]
        settled = iter(await self._ledger.settle_many(valid) if valid else [])
        results = [p if isinstance(p, DomainError) else next(settled) for p in parsed]
        return pb.SettlePaymentsResponse(results=[outcome_pb(r) for r in results])

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Balance:
        v = ViolationCollector()
        member_id = member_id_of(v, request.name, "name", "/balance")
        v.raise_if_any()
        row, expiring = await self._ledger.balance(member_id)
        return pb.Balance(
            name=request.name,
            available=row.available,
            pending=row.pending,
            held=row.held,
            lifetime_earned=row.lifetime_earned,
            expiring=[
                pb.ExpiringPoints(points=n, expire_time=_timestamp(at)) for n, at in expiring
            ],
        )

    async def ApplyMemberEvents(
        self, request: pb.ApplyMemberEventsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ApplyMemberEventsResponse:
        v = ViolationCollector()
        if not 1 <= len(request.events) <= MAX_EVENTS:
            v.add("events", f"between 1 and {MAX_EVENTS} events")
        events = [_event_of(v, i, e) for i, e in enumerate(request.events)]
        v.raise_if_any()
        applied, skipped = await self._members.apply(events)
        return pb.ApplyMemberEventsResponse(applied=applied, skipped=skipped)


def _system_clock() -> datetime:
    return datetime.now(UTC)


class PointsComponent:
    service_names: Sequence[str] = (pb.DESCRIPTOR.services_by_name["PointsService"].full_name,)

    def __init__(self, servicer: PointsServicer) -> None:
        self._servicer = servicer

    def add_to(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_PointsServiceServicer_to_server(self._servicer, server)

    async def close(self) -> None:
        pass


async def load_rules_in_force(pool: asyncpg.Pool, path: Path) -> RulesInForce:
    """Parses the rules file and records it as a new version if it changed."""
    rules = program_rules.load_rules_file(path)
    async with pool.acquire() as conn:
        version = await register_rules(conn, rules.digest(), rules.document())
    return RulesInForce(version, rules)


async def build(pool: asyncpg.Pool, settings: Settings) -> PointsComponent:
    path = Path(os.environ.get(RULES_FILE_ENV) or program_rules.DEFAULT_RULES_FILE)
    rules = await load_rules_in_force(pool, path)
    members = MemberDirectory(pool)
    ledger = Ledger(pool, members, rules, _system_clock)
    return PointsComponent(PointsServicer(ledger, members, _system_clock))


SPEC = ServiceSpec(name="points", migrations_dir=Path(__file__).parent / "migrations", build=build)
