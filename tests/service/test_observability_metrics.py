"""Prometheus metrics of the running services: committed work counted exactly once, gauges
read at scrape time, and no personal information in any label."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
from membership.points.v1 import points_pb2 as pb
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.runtime.db import Conn, create_pool
from services.runtime.scrape import Probe, ProbeSet, outbox_probe
from services.runtime.scrape import Samples as ProbeSamples
from tests.service.test_points_grants import grant
from tests.service.test_points_refunds import refund
from tests.service.test_points_rewards import catalogue, redeem, redeemed, rich_member
from tests.service.test_points_settlement import NOW, known_member, payment, settler
from tests.support.suite import Suite

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# the accounts service's ids (`m` + 19 base32 characters) and this file's test members
MEMBER_ID = re.compile(r"\bm[0-9a-hjkmnp-tv-z]{19}\b|mpts\d+")
PHONE = re.compile(r"\+?\d[\d\- ]{6,}\d")


async def scrape() -> Samples:
    """What a Prometheus server would read: rendered on another thread, as the HTTP
    endpoint does, so the scrape-time queries run on the services' loop meanwhile."""
    text = (await asyncio.to_thread(generate_latest, REGISTRY)).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


SETTLED = "membership_points_settlements_total"
REFUNDED = "membership_points_refunds_total"
ISSUED = "membership_points_issued_total"
REDEEMED = "membership_points_redeemed_total"

__all__ = ["catalogue"]  # the fixture, imported for pytest


async def test_a_settlement_counts_once_and_its_replay_does_not_add(suite: Suite) -> None:
    member_id = await known_member(suite)
    before = await scrape()
    first = await suite.points.SettlePayment(payment(member_id, "m-1"), metadata=settler(suite))
    await suite.points.SettlePayment(payment(member_id, "m-1"), metadata=settler(suite))
    after = await scrape()
    assert first.points > 0
    assert value(after, SETTLED, outcome="earned") - value(before, SETTLED, outcome="earned") == 1
    assert (
        value(after, SETTLED, outcome="replayed") - value(before, SETTLED, outcome="replayed") == 1
    )
    issued = value(after, ISSUED, source="settlement") - value(before, ISSUED, source="settlement")
    assert issued == first.points


async def test_a_grant_counts_its_points_once(suite: Suite) -> None:
    member_id = await known_member(suite)
    before = await scrape()
    for _ in range(2):  # the repeat answers with the first result and credits nothing
        await suite.points.GrantPoints(
            grant(member_id, "g-metrics", 7), metadata=suite.auth("wallet-backend")
        )
    after = await scrape()
    assert value(after, ISSUED, source="grant") - value(before, ISSUED, source="grant") == 7


async def test_a_batch_counts_each_item_by_outcome(suite: Suite) -> None:
    member_id = await known_member(suite)
    before = await scrape()
    requests = [
        payment(member_id, "mb-1"),
        payment(member_id, "mb-1"),  # the same key again within the batch
        payment(member_id, "mb-2", 50_000, "top_up"),  # never earns
        payment("nobody00", "mb-3"),  # unknown member: that item alone fails
    ]
    await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    after = await scrape()
    moved = {
        outcome: value(after, SETTLED, outcome=outcome) - value(before, SETTLED, outcome=outcome)
        for outcome in ("earned", "replayed", "no_points", "rejected")
    }
    assert moved == {"earned": 1, "replayed": 1, "no_points": 1, "rejected": 1}


async def test_each_settlement_transaction_records_its_batch_size(suite: Suite) -> None:
    member_id = await known_member(suite)
    before = await scrape()
    requests = [payment(member_id, f"size-{i}") for i in range(3)]
    await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    after = await scrape()
    name = "membership_points_settlement_batch_size"
    assert value(after, f"{name}_count") - value(before, f"{name}_count") == 1
    assert value(after, f"{name}_sum") - value(before, f"{name}_sum") == 3
    assert value(after, f"{name}_bucket", le="2.0") == value(before, f"{name}_bucket", le="2.0")


async def test_a_refund_counts_once_and_its_replay_does_not_add(suite: Suite) -> None:
    member_id = await known_member(suite)
    old = NOW - timedelta(days=10)
    await suite.points.SettlePayment(
        payment(member_id, "mr-1", 10_000, occurred=old), metadata=settler(suite)
    )
    before = await scrape()
    request = refund(member_id, "mr-1", "r-1", 5_000)
    done = await suite.points.RefundPayment(request, metadata=settler(suite))
    await suite.points.RefundPayment(request, metadata=settler(suite))
    after = await scrape()
    clawed = "membership_points_clawed_back_total"
    assert done.points_clawed_back > 0
    assert (
        value(after, REFUNDED, outcome="clawed_back")
        - value(before, REFUNDED, outcome="clawed_back")
        == 1
    )
    assert (
        value(after, REFUNDED, outcome="replayed") - value(before, REFUNDED, outcome="replayed")
        == 1
    )
    assert value(after, clawed) - value(before, clawed) == done.points_clawed_back


async def test_pools_jobs_outboxes_and_data_requests_are_gauged(suite: Suite) -> None:
    samples = await scrape()
    for service in ("accounts", "points", "privacy"):
        size = value(samples, "membership_db_pool_connections", service=service, state="size")
        in_use = value(samples, "membership_db_pool_connections", service=service, state="in_use")
        assert size >= 1 and 0 <= in_use <= size
    for job in ("maturation", "expiry", "hold_expiry"):
        due: tuple[str, tuple[tuple[str, str], ...]] = (
            "membership_points_job_oldest_due_seconds",
            (("job", job), ("service", "points")),
        )
        assert due in samples
    for service in ("accounts", "privacy"):
        key = ("membership_outbox_oldest_undelivered_seconds", (("service", service),))
        assert key in samples
    assert value(samples, "membership_dsr_overdue_requests", service="privacy") >= 0
    for service in ("accounts", "points", "privacy"):
        code = value(samples, "membership_schema_code_version", service=service)
        assert value(samples, "membership_schema_version", service=service) == code > 0


async def test_no_label_carries_a_member_id_or_a_phone_number(suite: Suite) -> None:
    member_id = await known_member(suite)
    await suite.points.SettlePayment(payment(member_id, "mp-1"), metadata=settler(suite))
    for (name, labels), _ in (await scrape()).items():
        for label, text in labels:
            assert member_id not in text, (name, label)
            assert not MEMBER_ID.search(text), (name, label, text)
            assert not PHONE.search(text), (name, label, text)


async def test_a_reward_redemption_counts_its_points_once(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    member_id = await rich_member(suite, 1)
    before = await scrape()
    for _ in range(2):  # the repeat answers with the first result and spends nothing
        got = await redeemed(suite, redeem(member_id, "t-cheap", "r-metrics", 2))
    after = await scrape()
    assert value(after, REDEEMED) - value(before, REDEEMED) == got.points > 0


@pytest.fixture
async def probe_pool(database: str) -> AsyncIterator[asyncpg.Pool]:
    made = await create_pool(database, 1, 2)
    try:
        yield made
    finally:
        await made.close()


def constant_probe(name: str, sql: str) -> Probe:
    async def query(conn: Conn) -> ProbeSamples:
        return [((), float(await conn.fetchval(sql)))]

    return Probe(name, "for the test", (), query)


async def test_a_probe_past_its_statement_timeout_leaves_out_only_itself(
    probe_pool: asyncpg.Pool,
) -> None:
    probes = [
        constant_probe("before", "SELECT 1"),
        constant_probe("slow", "SELECT pg_sleep(1)::text::int"),  # past the 500 ms limit
        constant_probe("after", "SELECT 2"),
    ]
    probe_set = ProbeSet(probe_pool, asyncio.get_running_loop(), probes)
    answers = await asyncio.to_thread(probe_set.samples)
    assert answers == {"before": [((), 1.0)], "after": [((), 2.0)]}


async def test_the_outbox_age_is_the_first_undelivered_event_read_from_its_index(
    probe_pool: asyncpg.Pool,
) -> None:
    async with probe_pool.acquire() as conn, conn.transaction():
        # the accounts and privacy outboxes' columns and partial index, in a schema of its own
        await conn.execute(
            "CREATE SCHEMA probed;"
            " CREATE TABLE probed.outbox (event_id bigint GENERATED ALWAYS AS IDENTITY,"
            " created_at timestamptz NOT NULL, published_at timestamptz);"
            " CREATE INDEX outbox_unpublished ON probed.outbox (event_id)"
            " WHERE published_at IS NULL;"
            " INSERT INTO probed.outbox (created_at, published_at) VALUES"
            " (now() - interval '1 hour', now()),"  # delivered: not counted
            " (now() - interval '10 minutes', NULL),"
            " (now() - interval '1 minute', NULL)"
        )
        [(_, age)] = await outbox_probe("probed").query(conn)
        assert age == 600.0
        await conn.execute("UPDATE probed.outbox SET published_at = now()")
        assert await outbox_probe("probed").query(conn) == [((), 0.0)]
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT created_at FROM probed.outbox"
            " WHERE published_at IS NULL ORDER BY event_id LIMIT 1"
        )
        # one row off the index, not an aggregate over every undelivered event
        assert '"Limit"' in plan and "outbox_unpublished" in plan and "Aggregate" not in plan
