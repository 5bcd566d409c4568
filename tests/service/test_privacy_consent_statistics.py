"""GetConsentStatistics through gRPC against real PostgreSQL: counts by status per purpose,
stale grants apart, erased members left out, only for officers and admins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import grpc
import pytest
from membership.privacy.v1 import consent_pb2 as cpb
from membership.privacy.v1 import consent_pb2_grpc
from membership.privacy.v1 import field_crypto_pb2 as ppb

from services.privacy.consent_statistics import ConsentStatisticsCache
from services.privacy.purpose_catalogue import load_purposes_file
from services.privacy.settings import DEFAULT_PURPOSES_FILE
from tests.support.consent import (
    grant_request,
    known_member,
    privacy_with_purposes,
    purposes_file,
    wallet,
    withdraw_request,
)
from tests.support.privacy import privacy_role
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

Counts = dict[str, tuple[int, int, int, int]]


async def statistics(
    stub: consent_pb2_grpc.ConsentServiceStub, suite: Suite, role: str = "officer"
) -> tuple[Counts, int]:
    got: cpb.GetConsentStatisticsResponse = await stub.GetConsentStatistics(
        cpb.GetConsentStatisticsRequest(), metadata=suite.auth(role)
    )
    assert got.HasField("compute_time")
    counts = {
        p.purpose: (p.granted_members, p.stale_members, p.withdrawn_members, p.not_given_members)
        for p in got.purposes
    }
    return counts, got.members


async def three_members(suite: Suite) -> list[str]:
    """m1: service + marketing; m2: service, marketing withdrawn; m3: service only."""
    members = [await known_member(suite, f"mstat{i}") for i in (1, 2, 3)]
    for i, member in enumerate(members):
        purposes = ("service", "marketing") if i < 2 else ("service",)
        await suite.consent.GrantConsent(grant_request(member, *purposes), metadata=wallet(suite))
    await suite.consent.WithdrawConsent(
        withdraw_request(members[1], "marketing"), metadata=wallet(suite)
    )
    return members


async def test_an_empty_catalogue_of_consent_counts_nothing(suite: Suite) -> None:
    counts, members = await statistics(suite.consent, suite)
    assert members == 0
    assert list(counts) == [
        "service",
        "payment_records",
        "marketing",
        "personalization",
        "third_party_sharing",
        "cross_border",
    ]
    assert set(counts.values()) == {(0, 0, 0, 0)}


async def test_counts_by_status_per_purpose(suite: Suite) -> None:
    await three_members(suite)
    counts, members = await statistics(suite.consent, suite, role="admin")
    assert members == 3
    assert counts["service"] == (3, 0, 0, 0)
    # the latest record counts: m2 granted, then withdrew
    assert counts["marketing"] == (1, 0, 1, 1)
    assert counts["cross_border"] == (0, 0, 0, 3)


async def test_erased_members_are_not_counted(suite: Suite) -> None:
    await three_members(suite)
    await suite.privacy.DestroySubjectKey(
        ppb.DestroySubjectKeyRequest(subject_id="mstat1", request_id="e-1", reason="dsr-1"),
        metadata=privacy_role(suite),
    )
    counts, members = await statistics(suite.consent, suite)
    assert members == 2
    assert counts["service"] == (2, 0, 0, 0)
    assert counts["marketing"] == (0, 0, 1, 1)


async def test_grants_to_an_outdated_material_notice_count_as_stale(
    suite: Suite, tmp_path: Path
) -> None:
    await three_members(suite)
    notices = "[{ version = 1, material = true }, { version = 2, material = true }]"
    async with privacy_with_purposes(
        suite, purposes_file(tmp_path, "marketing", notices)
    ) as consent:
        await consent.GrantConsent(
            grant_request("members/mstat3", "marketing", version=2, request_id="g-2"),
            metadata=wallet(suite),
        )
        counts, _ = await statistics(consent, suite)
    # m1's grant of version 1 is stale; m3 consented to version 2; m2 withdrew
    assert counts["marketing"] == (1, 1, 1, 0)


async def test_only_officers_and_admins_see_the_statistics(suite: Suite) -> None:
    for role in ("wallet-backend", "settlement", "service:points"):
        await expect_error(
            suite.consent.GetConsentStatistics(
                cpb.GetConsentStatisticsRequest(), metadata=suite.auth(role)
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_figures_are_reused_for_the_ttl_and_one_scan_serves_concurrent_callers(
    suite: Suite,
) -> None:
    catalogue = load_purposes_file(DEFAULT_PURPOSES_FILE)
    pool = await asyncpg.create_pool(suite.dsn, min_size=1, max_size=4)
    try:
        kept = ConsentStatisticsCache(pool, catalogue, ttl_s=60.0)
        fresh = ConsentStatisticsCache(pool, catalogue, ttl_s=0.0)
        first = await asyncio.gather(*(kept.get() for _ in range(8)))
        assert all(result is first[0] for result in first)
        await three_members(suite)
        assert await kept.get() is first[0]
        assert (await kept.get()).members == 0
        assert (await fresh.get()).members == 3
    finally:
        await pool.close()


async def test_a_caller_that_gives_up_does_not_cancel_the_computation(suite: Suite) -> None:
    catalogue = load_purposes_file(DEFAULT_PURPOSES_FILE)
    pool = await asyncpg.create_pool(suite.dsn, min_size=1, max_size=2)
    cache = ConsentStatisticsCache(pool, catalogue, ttl_s=60.0)
    try:
        await three_members(suite)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(cache.get(), timeout=0.001)  # its deadline passed
        # the next caller gets the figures of the scan the first one started
        assert (await cache.get()).members == 3
    finally:
        await cache.close()
        await pool.close()
