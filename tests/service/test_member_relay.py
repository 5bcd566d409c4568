"""Members come from accounts: the outbox relay delivers registrations and status changes to
points at least once, points applies them idempotently and in any order, a member
registered while points is down is known to points once it is back, and only
service:accounts may call ApplyMemberEvents."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2
from membership.accounts.v1 import accounts_pb2 as apb
from membership.points.v1 import points_pb2 as pb

from services.accounts.domain.events import OutboxEvent
from services.accounts.outbox_relay import Backoff, MalformedEventError, OutboxRelay
from services.accounts.ports_points import PointsPublisher, to_member_event
from services.accounts.store import outbox as accounts_store
from services.points.server import SPEC as POINTS
from services.runtime.clients import ServiceCredentials
from services.runtime.server import start_service
from tests.support.accounts import next_request_id, register
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

WAIT_S = 5.0
WAIT_AFTER_OUTAGE_S = 15.0  # the relay's backoff is capped at 5 s
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


async def points_member(db: asyncpg.Connection, member_id: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT * FROM points.members WHERE member_id = $1", member_id)


async def wait_for_state(
    db: asyncpg.Connection, member_id: str, state: str, timeout_s: float = WAIT_S
) -> asyncpg.Record:
    deadline = time.monotonic() + timeout_s
    while True:
        row = await points_member(db, member_id)
        if row is not None and row["state"] == state:
            return row
        seen = None if row is None else row["state"]
        assert time.monotonic() < deadline, f"points has {member_id} as {seen}, not {state}"
        await asyncio.sleep(0.05)


def _id(name: str) -> str:
    return name.removeprefix("members/")


def event(
    event_id: int,
    member_id: str,
    state: pb.MemberState.ValueType = pb.MEMBER_STATE_ACTIVE,
    *,
    registered: bool = False,
    referred_by: str = "",
    at: datetime | None = None,
) -> pb.MemberEvent:
    when = timestamp_pb2.Timestamp()
    when.FromDatetime(at or T0 + timedelta(minutes=event_id))
    kind = pb.MEMBER_EVENT_TYPE_REGISTERED if registered else pb.MEMBER_EVENT_TYPE_STATUS_CHANGED
    return pb.MemberEvent(
        event_id=event_id,
        member=f"members/{member_id}",
        type=kind,
        state=state,
        referred_by=f"members/{referred_by}" if referred_by else "",
        event_time=when,
    )


def registered_event(event_id: int, member_id: str) -> OutboxEvent:
    """A registration as accounts' outbox holds it (what PointsPublisher takes)."""
    payload = {"member_id": member_id, "referred_by": "", "status": "ACTIVE"}
    return OutboxEvent(event_id, member_id, "member.registered", payload, T0)


async def apply(
    suite: Suite, events: Sequence[pb.MemberEvent], role: str | None = "service:accounts"
) -> tuple[int, int]:
    """ApplyMemberEvents as `role` (None: without a token): (applied, skipped)."""
    response: pb.ApplyMemberEventsResponse = await suite.points.ApplyMemberEvents(
        pb.ApplyMemberEventsRequest(events=events), metadata=suite.auth(role) if role else ()
    )
    return response.applied, response.skipped


# --- through the whole suite ----------------------------------------------------------------


async def test_registered_members_reach_points(suite: Suite, db: asyncpg.Connection) -> None:
    referrer = await register(suite)
    referred = await register(suite, referral_code=referrer.referral_code)
    first = await wait_for_state(db, _id(referrer.name), "ACTIVE")
    second = await wait_for_state(db, _id(referred.name), "ACTIVE")
    assert first["referred_by"] is None
    assert second["referred_by"] == _id(referrer.name)
    # the event's time is the registration's (one transaction, one now())
    assert second["registered_at"] == referred.create_time.ToDatetime(tzinfo=UTC)
    outbox = await db.fetch(
        "SELECT member_id, event_id, published_at FROM accounts.outbox ORDER BY event_id"
    )
    assert [r["member_id"] for r in outbox] == [_id(referrer.name), _id(referred.name)]
    assert second["last_event_id"] == outbox[1]["event_id"]
    # published once points accepted them (within a poll interval of the row appearing)
    deadline = time.monotonic() + WAIT_S
    while await db.fetchval("SELECT count(*) FROM accounts.outbox WHERE published_at IS NULL"):
        assert time.monotonic() < deadline, "the relay did not mark the events published"
        await asyncio.sleep(0.05)


async def test_status_changes_propagate(suite: Suite, db: asyncpg.Connection) -> None:
    admin = suite.auth("admin", subject="admin:risk")
    member = await register(suite)
    member_id = _id(member.name)
    await wait_for_state(db, member_id, "ACTIVE")
    for rpc, request_type, state in (
        (suite.accounts.FreezeMember, apb.FreezeMemberRequest, "FROZEN"),
        (suite.accounts.UnfreezeMember, apb.UnfreezeMemberRequest, "ACTIVE"),
        (suite.accounts.FreezeMember, apb.FreezeMemberRequest, "FROZEN"),
        (suite.accounts.CloseMember, apb.CloseMemberRequest, "CLOSED"),
    ):
        request = request_type(name=member.name, request_id=next_request_id(), reason="risk")
        await rpc(request, metadata=admin)
        await wait_for_state(db, member_id, state)
    await suite.accounts.EraseMemberData(
        apb.EraseMemberDataRequest(name=member.name, request_id="erase-1", reason="PIPL art. 47"),
        metadata=suite.auth("service:privacy", subject="privacy:dsr"),
    )
    erased = await wait_for_state(db, member_id, "ERASED")
    newest = await db.fetchval(
        "SELECT max(event_id) FROM accounts.outbox WHERE member_id = $1", member_id
    )
    assert erased["last_event_id"] == newest


async def test_redelivery_is_skipped(suite: Suite, db: asyncpg.Connection) -> None:
    member = await register(suite)
    await suite.accounts.FreezeMember(
        apb.FreezeMemberRequest(name=member.name, request_id="f-1", reason="risk"),
        metadata=suite.auth("admin"),
    )
    before = await wait_for_state(db, _id(member.name), "FROZEN")
    # what the relay delivered, delivered again (a commit lost after points applied it)
    rows = await db.fetch(
        "SELECT event_id, member_id, event_type, payload, created_at FROM accounts.outbox"
        " WHERE member_id = $1 ORDER BY event_id",
        _id(member.name),
    )
    events = [
        to_member_event(OutboxEvent(**{**r, "payload": json.loads(r["payload"])})) for r in rows
    ]
    assert await apply(suite, events) == (0, 2)
    assert await apply(suite, events) == (0, 2)
    assert await points_member(db, _id(member.name)) == before


async def test_same_events_twice_apply_once(suite: Suite, db: asyncpg.Connection) -> None:
    events = [event(1, "mtwice", registered=True), event(2, "mtwice", pb.MEMBER_STATE_FROZEN)]
    assert await apply(suite, events) == (2, 0)
    assert await apply(suite, events) == (0, 2)
    # and an event repeated within one call counts once
    assert await apply(suite, [event(3, "mtwice"), event(3, "mtwice")]) == (1, 1)
    row = await points_member(db, "mtwice")
    assert row is not None
    assert (row["state"], row["last_event_id"]) == ("ACTIVE", 3)


async def test_out_of_order_keeps_the_newest_state(suite: Suite, db: asyncpg.Connection) -> None:
    registered_at = T0 + timedelta(minutes=10)
    # the status change overtakes the registration, which overtakes an older change
    assert await apply(suite, [event(12, "mlate", pb.MEMBER_STATE_CLOSED)]) == (1, 0)
    row = await points_member(db, "mlate")
    assert row is not None
    assert (row["state"], row["referred_by"]) == ("CLOSED", None)
    registration = event(10, "mlate", registered=True, referred_by="mref", at=registered_at)
    # only the referrer and the registration time are filled in
    assert await apply(suite, [registration]) == (1, 0)
    assert await apply(suite, [event(11, "mlate", pb.MEMBER_STATE_FROZEN)]) == (0, 1)
    assert await apply(suite, [registration]) == (0, 1)
    row = await points_member(db, "mlate")
    assert row is not None
    assert (row["state"], row["referred_by"], row["last_event_id"]) == ("CLOSED", "mref", 12)
    assert row["registered_at"] == registered_at
    # within one call, events of a member apply in event order whatever the request order
    batch = [
        event(22, "mbatch", pb.MEMBER_STATE_FROZEN),
        event(21, "mbatch", registered=True),
        event(23, "mbatch", pb.MEMBER_STATE_CLOSED),
    ]
    assert await apply(suite, batch) == (3, 0)
    await wait_for_state(db, "mbatch", "CLOSED", timeout_s=0)


async def test_concurrent_deliveries_do_not_deadlock(suite: Suite, db: asyncpg.Connection) -> None:
    ids = [f"mconc{i:02d}" for i in range(40)]
    older = [event(1, m, registered=True) for m in ids]
    newer = [event(2, m, pb.MEMBER_STATE_FROZEN) for m in reversed(ids)]
    results = await asyncio.gather(*(apply(suite, b) for b in (older, newer, older, newer)))
    assert sum(applied for applied, _ in results) >= 80
    states = await db.fetch(
        "SELECT state, last_event_id, registered_at FROM points.members"
        " WHERE member_id = ANY($1::text[])",
        ids,
    )
    assert len(states) == len(ids)
    assert {(r["state"], r["last_event_id"]) for r in states} == {("FROZEN", 2)}
    assert {r["registered_at"] for r in states} == {T0 + timedelta(minutes=1)}


async def test_member_registered_while_points_is_down(suite: Suite, db: asyncpg.Connection) -> None:
    port = suite.points_service.port
    await suite.points_service.stop(0)
    member = await register(suite)
    await asyncio.sleep(1.0)  # several failed deliveries
    assert await points_member(db, _id(member.name)) is None
    unpublished = await db.fetchval(
        "SELECT count(*) FROM accounts.outbox WHERE member_id = $1 AND published_at IS NULL",
        _id(member.name),
    )
    assert unpublished == 1, "a failed delivery marks nothing"
    suite.points_service = await start_service(POINTS, suite.settings, f"127.0.0.1:{port}")
    await wait_for_state(db, _id(member.name), "ACTIVE", timeout_s=WAIT_AFTER_OUTAGE_S)


@pytest.mark.parametrize("role", ["wallet-backend", "settlement", "admin", "service:privacy"])
async def test_only_accounts_may_apply_member_events(
    suite: Suite, db: asyncpg.Connection, role: str
) -> None:
    events = [event(1, "mdenied", registered=True)]
    await expect_error(apply(suite, events, role), grpc.StatusCode.PERMISSION_DENIED)
    await expect_error(apply(suite, events, None), grpc.StatusCode.UNAUTHENTICATED)
    assert await points_member(db, "mdenied") is None


async def test_malformed_events_are_refused(suite: Suite, db: asyncpg.Connection) -> None:
    good = event(1, "mgood", registered=True)
    bad = pb.MemberEvent(event_id=0, member="nobody", event_time=good.event_time)
    await expect_error(apply(suite, [good, bad]), grpc.StatusCode.INVALID_ARGUMENT)
    await expect_error(apply(suite, []), grpc.StatusCode.INVALID_ARGUMENT)
    assert await points_member(db, "mgood") is None, "nothing of a refused call is written"


# --- the relay on its own, against an accounts schema with no running service ---------------


class FakePublisher:
    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[pb.MemberEvent]] = []
        self.failures = failures

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        # what PointsPublisher would send (it converts the events before calling points)
        sent = [to_member_event(e) for e in events]
        if self.failures:
            self.failures -= 1
            raise ConnectionError("points is down")
        self.batches.append(sent)


@pytest.fixture
async def pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


async def add_event(pool: asyncpg.Pool, member_id: str, event_type: str, **payload: Any) -> int:
    value = await pool.fetchval(
        "INSERT INTO accounts.outbox (member_id, event_type, payload)"
        " VALUES ($1, $2, $3::jsonb) RETURNING event_id",
        member_id,
        event_type,
        json.dumps({"member_id": member_id, **payload}),
    )
    return int(value)


async def unpublished(pool: asyncpg.Pool) -> list[int]:
    rows = await pool.fetch(
        "SELECT event_id FROM accounts.outbox WHERE published_at IS NULL ORDER BY event_id"
    )
    return [r["event_id"] for r in rows]


async def test_relay_sends_batches_in_event_order_and_marks_them(pool: asyncpg.Pool) -> None:
    ids = [
        await add_event(pool, "mb", "member.registered", referred_by="ma", status="ACTIVE"),
        await add_event(pool, "ma", "member.registered", referred_by="", status="ACTIVE"),
        await add_event(
            pool, "mb", "member.status_changed", from_status="ACTIVE", to_status="FROZEN"
        ),
    ]
    other = await add_event(pool, "ma", "member.something_else")
    publisher = FakePublisher()
    relay = OutboxRelay(pool, publisher, batch_size=2)
    assert [await relay.relay_once() for _ in range(3)] == [2, 1, 0]
    sent = [e for batch in publisher.batches for e in batch]
    assert [e.event_id for e in sent] == ids
    assert [(e.member, e.type, e.state, e.referred_by) for e in sent] == [
        ("members/mb", pb.MEMBER_EVENT_TYPE_REGISTERED, pb.MEMBER_STATE_ACTIVE, "members/ma"),
        ("members/ma", pb.MEMBER_EVENT_TYPE_REGISTERED, pb.MEMBER_STATE_ACTIVE, ""),
        ("members/mb", pb.MEMBER_EVENT_TYPE_STATUS_CHANGED, pb.MEMBER_STATE_FROZEN, ""),
    ]
    # an event type the relay does not know waits for whatever relays it
    assert await unpublished(pool) == [other]


async def test_failed_delivery_marks_nothing(pool: asyncpg.Pool) -> None:
    event_id = await add_event(pool, "ma", "member.registered", referred_by="", status="ACTIVE")
    relay = OutboxRelay(pool, FakePublisher(failures=1))
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert await unpublished(pool) == [event_id]
    assert await relay.relay_once() == 1
    assert await unpublished(pool) == []


async def test_one_relay_at_a_time(pool: asyncpg.Pool) -> None:
    await add_event(pool, "ma", "member.registered", referred_by="", status="ACTIVE")
    publisher = FakePublisher()
    async with pool.acquire() as conn, conn.transaction():
        assert await accounts_store.try_lock_outbox(conn)
        # another replica's relay finds the lock taken and sends nothing
        assert await OutboxRelay(pool, publisher).relay_once() == 0
    assert publisher.batches == []
    assert await OutboxRelay(pool, publisher).relay_once() == 1


async def test_relay_loop_backs_off_and_recovers(pool: asyncpg.Pool) -> None:
    await add_event(pool, "ma", "member.registered", referred_by="", status="ACTIVE")
    publisher = FakePublisher(failures=3)
    relay = OutboxRelay(pool, publisher, idle_poll_s=0.01, backoff=Backoff(0.01, 0.05))
    relay.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while await unpublished(pool):
            assert time.monotonic() < deadline, "the relay did not recover"
            await asyncio.sleep(0.02)
        # new events are picked up by polling
        await add_event(pool, "ma", "member.status_changed", to_status="CLOSED")
        while await unpublished(pool):
            assert time.monotonic() < deadline, "the relay stopped polling"
            await asyncio.sleep(0.02)
    finally:
        await relay.close()
    assert publisher.failures == 0
    assert [len(b) for b in publisher.batches] == [1, 1]


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 5.0)
    delays = [backoff.next_delay() for _ in range(9)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        ("member.registered", {"referred_by": "", "status": "SLEEPING"}),
        ("member.registered", {"referred_by": 7, "status": "ACTIVE"}),
        ("member.status_changed", {"from_status": "ACTIVE"}),
        ("member.renamed", {}),
    ],
)
def test_malformed_outbox_events_are_not_sent(event_type: str, payload: dict[str, Any]) -> None:
    outbox_event = OutboxEvent(9, "ma", event_type, payload, T0)
    with pytest.raises(MalformedEventError) as raised:
        to_member_event(outbox_event)
    assert raised.value.event_id == 9


async def test_publisher_reconnects_after_unavailable(suite: Suite) -> None:
    """A fresh channel after UNAVAILABLE: the old one's reconnection backoff would keep
    points unreachable for up to two minutes after a long outage."""
    channels: list[grpc.aio.Channel] = []

    def connect() -> grpc.aio.Channel:
        channels.append(grpc.aio.insecure_channel("127.0.0.1:1"))
        return channels[-1]

    credentials = ServiceCredentials(suite.signer, "service:accounts")
    publisher = PointsPublisher(connect, credentials, timeout_s=2)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await publisher.publish([registered_event(1, "mnowhere")])
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(channels) == 2
    finally:
        await publisher.close()
