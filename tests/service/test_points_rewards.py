"""ListRewards and RedeemReward: the catalogue synced from its file, redemption taking the
soonest-expiring lots, stock never oversold, per-member limits, minimum tiers; every refusal
writes nothing; a catalogue reload never resets consumed stock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2 as pb

from services.points import program
from services.points.rewards import load_catalogue_file
from services.points.settings import DEFAULT_RULES_FILE
from services.points.store.rewards import sync_catalogue
from tests.service.test_points_settlement import NOW, balance, known_member, ledger_holds, ts
from tests.service.test_points_spending import OLDER, earned, moves, remaining, spender, two_lots
from tests.support.rpc_errors import expect_error, parse_rpc_error
from tests.support.suite import Suite

FAILED = grpc.StatusCode.FAILED_PRECONDITION

CATALOGUE = """
[[rewards]]
sku = "t-cheap"
name = "Cheap"
points_cost = 5
stock = {cheap_stock}
min_tier = "basic"
active = true

[[rewards]]
sku = "t-limited"
name = "Limited"
points_cost = 2
stock = "unlimited"
per_member_limit = 3
min_tier = "basic"
active = true

[[rewards]]
sku = "t-gold"
name = "Gold only"
points_cost = 1
stock = 5
min_tier = "gold"
active = true

[[rewards]]
sku = "t-soldout"
name = "Sold out"
points_cost = 1
stock = 0
min_tier = "basic"
active = true

[[rewards]]
sku = "t-retired"
name = "Retired"
points_cost = 1
stock = 5
min_tier = "basic"
active = false
"""


async def load(db: asyncpg.Connection, tmp_path: Path, cheap_stock: str = "10") -> None:
    """Syncs the test catalogue as a start would (the default rewards are retired by it)."""
    path = tmp_path / "rewards.toml"
    path.write_text(CATALOGUE.format(cheap_stock=cheap_stock), encoding="utf-8")
    rules = program.load_rules_file(DEFAULT_RULES_FILE)
    await sync_catalogue(db, load_catalogue_file(path, rules))


@pytest.fixture
async def catalogue(db: asyncpg.Connection, tmp_path: Path) -> None:
    await load(db, tmp_path)


def redeem(member_id: str, sku: str, request_id: str, quantity: int = 0) -> pb.RedeemRewardRequest:
    return pb.RedeemRewardRequest(
        member=f"members/{member_id}", sku=sku, request_id=request_id, quantity=quantity
    )


async def redeemed(suite: Suite, request: pb.RedeemRewardRequest) -> pb.RewardRedemption:
    got: pb.RewardRedemption = await suite.points.RedeemReward(request, metadata=spender(suite))
    return got


async def listed(suite: Suite, **fields: object) -> pb.ListRewardsResponse:
    got: pb.ListRewardsResponse = await suite.points.ListRewards(
        pb.ListRewardsRequest(**fields),  # type: ignore[arg-type]
        metadata=spender(suite),
    )
    return got


async def stock(db: asyncpg.Connection, sku: str) -> int | None:
    value = await db.fetchval("SELECT stock FROM points.rewards WHERE sku = $1", sku)
    return None if value is None else int(value)


async def reconciled(suite: Suite) -> None:
    got = await suite.points.Reconcile(pb.ReconcileRequest(), metadata=suite.auth("admin"))
    assert got.ok, got.violations


async def test_the_default_catalogue_is_loaded_at_start(suite: Suite) -> None:
    got = await listed(suite)
    skus = [r.sku for r in got.rewards]
    assert skus == sorted(skus)
    assert {"coffee-voucher", "movie-ticket", "lounge-pass"} <= set(skus)
    coffee = next(r for r in got.rewards if r.sku == "coffee-voucher")
    assert (coffee.name, coffee.unlimited_stock, coffee.min_tier) == (
        "rewards/coffee-voucher",
        True,
        "basic",
    )


async def test_list_pages_through_active_rewards_by_sku(suite: Suite, catalogue: None) -> None:
    first = await listed(suite, page_size=2)
    assert [r.sku for r in first.rewards] == ["t-cheap", "t-gold"]
    assert first.next_page_token
    second = await listed(suite, page_size=2, page_token=first.next_page_token)
    assert [r.sku for r in second.rewards] == ["t-limited", "t-soldout"]
    assert second.next_page_token == ""
    cheap = first.rewards[0]
    assert (cheap.points_cost, cheap.stock, cheap.unlimited_stock, cheap.per_member_limit) == (
        5,
        10,
        False,
        0,
    )
    assert second.rewards[0].per_member_limit == 3
    member_id = await known_member(suite)
    await expect_error(
        suite.points.ListRewards(
            pb.ListRewardsRequest(
                page_token=first.next_page_token, available_to=f"members/{member_id}"
            ),
            metadata=spender(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"page_token"},
    )


async def test_available_to_a_member_leaves_out_tier_stock_and_limit(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    member_id = await known_member(suite)
    await earned(suite, member_id, "p-1", 1000, OLDER)  # 20 points
    mine = f"members/{member_id}"
    got = await listed(suite, available_to=mine)
    # t-gold needs gold (the member is basic), t-soldout has none left
    assert [r.sku for r in got.rewards] == ["t-cheap", "t-limited"]
    await redeemed(suite, redeem(member_id, "t-limited", "r-1", 3))
    got = await listed(suite, available_to=mine)
    assert [r.sku for r in got.rewards] == ["t-cheap"]
    assert len((await listed(suite)).rewards) == 4  # others still see everything active
    await expect_error(
        suite.points.ListRewards(
            pb.ListRewardsRequest(available_to="members/nobody1"), metadata=spender(suite)
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_redeeming_takes_points_soonest_lots_first_and_stock(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    member_id, a, b = await two_lots(suite, db)  # 12 points expire first, then 20
    got = await redeemed(suite, redeem(member_id, "t-cheap", "r-1", 3))
    assert (got.name, got.sku, got.quantity, got.points) == (
        f"members/{member_id}/rewardRedemptions/r-1",
        "t-cheap",
        3,
        15,
    )
    assert [lot.points for lot in got.lots] == [12, 3]
    assert await moves(db, member_id, got.transaction) == [
        ("member:available", "program:redeemed", 12, a),
        ("member:available", "program:redeemed", 3, b),
    ]
    assert await remaining(db, member_id, a, b) == [0, 17]
    assert (await balance(suite, member_id)).available == 17
    assert await stock(db, "t-cheap") == 7
    row = await db.fetchrow(
        "SELECT kind, idempotency_key, points FROM points.transactions"
        " WHERE member_id = $1 AND kind = 'reward'",
        member_id,
    )
    assert row is not None
    assert tuple(row) == ("reward", "reward:r-1", -15)
    # idempotent: the same payload answers the first result, another is refused
    assert await redeemed(suite, redeem(member_id, "t-cheap", "r-1", 3)) == got
    await expect_error(
        suite.points.RedeemReward(redeem(member_id, "t-cheap", "r-1", 2), metadata=spender(suite)),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )
    assert await stock(db, "t-cheap") == 7
    assert (await balance(suite, member_id)).available == 17
    await ledger_holds(suite.dsn)
    await reconciled(suite)


async def test_every_refusal_writes_nothing(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    member_id, a, b = await two_lots(suite, db)  # 32 points
    await redeemed(suite, redeem(member_id, "t-limited", "r-ok", 2))  # 28 left, 2 of 3 used
    before = await balance(suite, member_id)
    cases = [
        (redeem(member_id, "t-nothing", "r-1"), grpc.StatusCode.NOT_FOUND, None),
        (redeem(member_id, "t-retired", "r-2"), FAILED, "REWARD_INACTIVE"),
        (redeem(member_id, "t-soldout", "r-3"), FAILED, "OUT_OF_STOCK"),
        (redeem(member_id, "t-cheap", "r-4", 11), grpc.StatusCode.INVALID_ARGUMENT, None),
        (redeem(member_id, "t-gold", "r-5"), FAILED, "TIER_TOO_LOW"),
        (redeem(member_id, "t-limited", "r-6", 2), FAILED, "PER_MEMBER_LIMIT"),
        (redeem(member_id, "t-cheap", "r-7", 6), FAILED, "INSUFFICIENT_POINTS"),
        (redeem("nobody1", "t-cheap", "r-8"), grpc.StatusCode.UNAVAILABLE, "MEMBER_UNKNOWN"),
    ]
    for request, code, reason in cases:
        await expect_error(
            suite.points.RedeemReward(request, metadata=spender(suite)), code, reason=reason
        )
    await freeze(suite, member_id)
    await expect_error(
        suite.points.RedeemReward(redeem(member_id, "t-cheap", "r-9"), metadata=spender(suite)),
        FAILED,
        reason="MEMBER_FROZEN",
    )
    assert await balance(suite, member_id) == before
    assert await stock(db, "t-cheap") == 10
    assert await remaining(db, member_id, a, b) == [8, 20]
    kinds = await db.fetch(
        "SELECT idempotency_key FROM points.transactions WHERE member_id = $1 AND kind = 'reward'",
        member_id,
    )
    assert [k["idempotency_key"] for k in kinds] == ["reward:r-ok"]
    units = await db.fetch("SELECT sku, units FROM points.reward_redemptions")
    assert [tuple(u) for u in units] == [("t-limited", 2)]
    await ledger_holds(suite.dsn)
    await reconciled(suite)


async def freeze(suite: Suite, member_id: str) -> None:
    frozen = pb.MemberEvent(
        event_id=2,
        member=f"members/{member_id}",
        type=pb.MEMBER_EVENT_TYPE_STATUS_CHANGED,
        state=pb.MEMBER_STATE_FROZEN,
        event_time=ts(NOW),
    )
    await suite.points.ApplyMemberEvents(
        pb.ApplyMemberEventsRequest(events=[frozen]), metadata=suite.auth("service:accounts")
    )


async def test_a_catalogue_reload_never_resets_consumed_stock(
    suite: Suite, db: asyncpg.Connection, tmp_path: Path, catalogue: None
) -> None:
    member_id = await known_member(suite)
    await earned(suite, member_id, "p-1", 1000, OLDER)  # 20 points
    await redeemed(suite, redeem(member_id, "t-cheap", "r-1", 3))
    await load(db, tmp_path)  # the same file again (a restart, another replica)
    assert await stock(db, "t-cheap") == 7
    await load(db, tmp_path, cheap_stock="15")  # 5 more offered
    assert await stock(db, "t-cheap") == 12
    await load(db, tmp_path, cheap_stock="2")  # fewer offered than were consumed
    assert await stock(db, "t-cheap") == 0
    await load(db, tmp_path, cheap_stock='"unlimited"')
    assert await stock(db, "t-cheap") is None


async def rich_member(suite: Suite, index: int) -> str:
    member_id = await known_member(suite)
    await earned(suite, member_id, f"p-{index}", 1000, OLDER)  # 20 points
    return member_id


async def test_50_concurrent_redemptions_of_a_stock_of_10_succeed_10_times(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    members = [await rich_member(suite, i) for i in range(50)]
    calls = [
        suite.points.RedeemReward(redeem(m, "t-cheap", f"r-{i}"), metadata=spender(suite))
        for i, m in enumerate(members)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.RewardRedemption)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(ok), len(failed)) == (10, 40)
    reasons = {(e.code, e.reason) for e in map(parse_rpc_error, failed)}
    assert reasons == {(FAILED, "OUT_OF_STOCK")}
    assert await stock(db, "t-cheap") == 0
    spent = await db.fetchval("SELECT count(*) FROM points.balances WHERE available = 15")
    assert spent == 10
    assert await db.fetchval("SELECT sum(units) FROM points.reward_redemptions") == 10
    await ledger_holds(suite.dsn)
    await reconciled(suite)


async def test_the_per_member_limit_holds_under_concurrency(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    member_id = await rich_member(suite, 0)
    calls = [
        suite.points.RedeemReward(redeem(member_id, "t-limited", f"r-{i}"), metadata=spender(suite))
        for i in range(20)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    ok = [r for r in results if isinstance(r, pb.RewardRedemption)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(ok), len(failed)) == (3, 17)
    assert {parse_rpc_error(e).reason for e in failed} == {"PER_MEMBER_LIMIT"}
    assert (await balance(suite, member_id)).available == 14
    units = await db.fetchval(
        "SELECT units FROM points.reward_redemptions WHERE member_id = $1", member_id
    )
    assert units == 3
    await ledger_holds(suite.dsn)
    await reconciled(suite)


async def test_a_member_who_reached_gold_may_redeem_gold_rewards(
    suite: Suite, db: asyncpg.Connection, catalogue: None
) -> None:
    member_id, _, _ = await two_lots(suite, db)
    await expect_error(
        suite.points.RedeemReward(redeem(member_id, "t-gold", "g-1"), metadata=spender(suite)),
        FAILED,
        reason="TIER_TOO_LOW",
    )
    await db.execute(
        "INSERT INTO points.member_tiers (member_id, tier_code, since, review_at, rule_version)"
        " SELECT $1, 'gold', now(), now() + interval '365 days', max(version)"
        " FROM points.program_rules",
        member_id,
    )
    got = await redeemed(suite, redeem(member_id, "t-gold", "g-2"))
    assert got.points == 1
    listed_now = await listed(suite, available_to=f"members/{member_id}")
    assert "t-gold" in [r.sku for r in listed_now.rewards]
    await ledger_holds(suite.dsn)
