"""Settlements and redemptions driven over gRPC with client retries on the same idempotency
keys, recording what the service acknowledged; and the checks that nothing acknowledged was
lost or applied twice."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc

from services.runtime.config import load_settings
from services.runtime.identity import TokenSigner, load_or_create_signing_key

Metadata = tuple[tuple[str, str], ...]
# what a caller may retry with the same key: the call may or may not have been applied
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
CALL_TIMEOUT_S = 3.0
RETRY_DELAY_S = 0.1
GRANT_POINTS = 100_000  # an admin GOODWILL grant: no member runs dry, however fast the load
REDEEM_POINTS = 7
SETTLE_MINOR = 1000  # 10.00 CNY dining: 20 points, well under the daily cap
TOKEN_TTL_S = 4 * 3600
# a restarted server is noticed within a fraction of a second, not after gRPC's 1-120 s backoff
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def channel(addr: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(addr, options=CHANNEL_OPTIONS)


class Tokens:
    def __init__(self, keys_dir: Path) -> None:
        audience = load_settings({}).token_audience
        self._signer = TokenSigner(load_or_create_signing_key(keys_dir), audience, "chaos")

    def auth(self, role: str) -> Metadata:
        token = self._signer.mint(f"chaos:{role}", role, TOKEN_TTL_S)
        return (("authorization", f"Bearer {token}"),)


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


@dataclass
class Ledger:
    """What the load asked for and what was acknowledged."""

    members: list[str] = field(default_factory=list)
    settled: dict[str, str] = field(default_factory=dict)  # payment_id -> member_id
    redeemed: dict[str, pb.Redemption] = field(default_factory=dict)  # request_id -> ack
    attempted_redeems: dict[str, str] = field(default_factory=dict)  # request_id -> member_id
    gave_up: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)


class Load:
    """Workers that settle and redeem until told to stop; a call is retried with the same
    key until it is acknowledged or `give_up_s` passes."""

    def __init__(self, points_addr: str, tokens: Tokens, give_up_s: float = 30.0) -> None:
        self.channel = channel(points_addr)
        self.stub = points_pb2_grpc.PointsServiceStub(self.channel)
        self.tokens = tokens
        self.give_up_s = give_up_s
        self.ledger = Ledger()
        self._ids = itertools.count(1)
        self._settler = tokens.auth("settlement")
        self._spender = tokens.auth("admin")

    async def close(self) -> None:
        await self.channel.close()

    async def call(self, method: str, request: object, metadata: Metadata) -> Any:
        """The reply, or None when the call failed for good (recorded in the ledger)."""
        deadline = time.monotonic() + self.give_up_s
        while True:
            try:
                reply = await getattr(self.stub, method)(
                    request, metadata=metadata, timeout=CALL_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    self.ledger.errors.append(f"{method}: {exc.code().name} {exc.details()}")
                    return None
                if time.monotonic() > deadline:
                    self.ledger.gave_up += 1
                    return None
                self.ledger.retries += 1
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            return reply

    async def add_members(self, count: int, prefix: str) -> None:
        for n in range(count):
            member_id = f"{prefix}{n:04d}"
            event = pb.MemberEvent(
                event_id=1,
                member=f"members/{member_id}",
                type=pb.MEMBER_EVENT_TYPE_REGISTERED,
                state=pb.MEMBER_STATE_ACTIVE,
                event_time=_now(),
            )
            request = pb.ApplyMemberEventsRequest(events=[event])
            assert await self.call(
                "ApplyMemberEvents", request, self.tokens.auth("service:accounts")
            )
            grant = pb.GrantPointsRequest(
                member=f"members/{member_id}",
                request_id=f"seed-{member_id}",
                points=GRANT_POINTS,
                reason=pb.GRANT_REASON_GOODWILL,
            )
            assert await self.call("GrantPoints", grant, self._spender)
            self.ledger.members.append(member_id)

    def _member(self, n: int) -> str:
        return self.ledger.members[n % len(self.ledger.members)]

    async def settle_one(self, tag: str) -> None:
        n = next(self._ids)
        member_id, payment_id = self._member(n), f"{tag}-pay-{n}"
        request = pb.SettlePaymentRequest(
            member=f"members/{member_id}",
            payment_id=payment_id,
            amount=pb.Money(currency_code="CNY", amount_minor=SETTLE_MINOR),
            merchant_id="merchant-chaos",
            merchant_category="dining",
            occur_time=_now(),
            channel="app",
        )
        if await self.call("SettlePayment", request, self._settler) is not None:
            self.ledger.settled[payment_id] = member_id

    async def redeem_one(self, tag: str) -> None:
        n = next(self._ids)
        member_id, request_id = self._member(n), f"{tag}-red-{n}"
        self.ledger.attempted_redeems[request_id] = member_id
        request = pb.RedeemPointsRequest(
            member=f"members/{member_id}", request_id=request_id, points=REDEEM_POINTS
        )
        reply: pb.Redemption | None = await self.call("RedeemPoints", request, self._spender)
        if reply is not None:
            self.ledger.redeemed[request_id] = reply

    async def worker(self, stop: asyncio.Event, tag: str, redeem_every: int = 3) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            if n % redeem_every == redeem_every - 1:
                await self.redeem_one(tag)
            else:
                await self.settle_one(tag)

    async def run(self, seconds: float, workers: int, tag: str) -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(self.worker(stop, f"{tag}{w}")) for w in range(workers)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)


async def reconcile(
    stub: points_pb2_grpc.PointsServiceStub, tokens: Tokens
) -> pb.ReconcileResponse:
    reply: pb.ReconcileResponse = await stub.Reconcile(
        pb.ReconcileRequest(), metadata=tokens.auth("admin"), timeout=60
    )
    return reply


def _chunks(items: list[str], size: int = 1000) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def keys_in_db(dsn: str, keys: list[str]) -> dict[str, int]:
    """How many ledger transactions each idempotency key has (the unique constraint makes
    it 0 or 1; a lost acknowledged write shows as 0)."""
    conn = await asyncpg.connect(dsn)
    try:
        found: dict[str, int] = dict.fromkeys(keys, 0)
        for chunk in _chunks(keys):
            rows = await conn.fetch(
                "SELECT idempotency_key, count(*) AS n FROM points.transactions"
                " WHERE idempotency_key = ANY($1::text[]) GROUP BY idempotency_key",
                chunk,
            )
            found.update({r["idempotency_key"]: int(r["n"]) for r in rows})
        return found
    finally:
        await conn.close()


async def redeemed_points_in_db(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT member_id, sum(points) AS total FROM points.transactions"
            " WHERE idempotency_key LIKE 'redeem:%' GROUP BY member_id"
        )
        return {r["member_id"]: abs(int(r["total"])) for r in rows}
    finally:
        await conn.close()


async def check_ledger(load: Load, dsn: str) -> list[str]:
    """Every problem found: acknowledged writes missing or doubled, redemptions applied
    twice (a repeat answered differently, or balances off by more than what was redeemed)."""
    problems: list[str] = []
    ledger = load.ledger
    settled = await keys_in_db(dsn, [f"payment:{p}" for p in ledger.settled])
    problems += [f"{k} present {n} times" for k, n in settled.items() if n != 1]
    redeemed = await keys_in_db(dsn, [f"redeem:{r}" for r in ledger.redeemed])
    problems += [f"{k} present {n} times" for k, n in redeemed.items() if n != 1]
    problems += await _repeats_answer_the_same(load)
    problems += await _balances_match(load, dsn)
    return problems


async def _repeats_answer_the_same(load: Load, sample: int = 50) -> list[str]:
    problems = []
    for request_id, first in itertools.islice(load.ledger.redeemed.items(), sample):
        member_id = load.ledger.attempted_redeems[request_id]
        request = pb.RedeemPointsRequest(
            member=f"members/{member_id}", request_id=request_id, points=REDEEM_POINTS
        )
        again: pb.Redemption | None = await load.call("RedeemPoints", request, load._spender)
        if again is None or again.transaction != first.transaction:
            problems.append(f"repeat of {request_id} answered {again} after {first}")
    return problems


async def _balances_match(load: Load, dsn: str) -> list[str]:
    """available == granted - redeemed for every member: a redemption applied twice, or
    one that took points without its transaction, would show here."""
    redeemed = await redeemed_points_in_db(dsn)
    problems = []
    for member_id in load.ledger.members:
        request = pb.GetBalanceRequest(name=f"members/{member_id}/balance")
        balance: pb.Balance | None = await load.call("GetBalance", request, load._spender)
        assert balance is not None
        expected = GRANT_POINTS - redeemed.get(member_id, 0)
        if balance.available != expected:
            problems.append(f"{member_id}: available {balance.available}, expected {expected}")
    return problems
