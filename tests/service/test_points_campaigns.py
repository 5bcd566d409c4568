"""Campaigns: their lifecycle through PromotionsService, and what they give settlements
(services/points/domain/campaign_awards.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta
from itertools import count
from zoneinfo import ZoneInfo

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import promotions_pb2 as ppb
from membership.points.v1 import promotions_pb2_grpc as ppb_grpc

from tests.service.test_points_refunds import refund
from tests.service.test_points_settlement import (
    NOW,
    balance,
    known_member,
    ledger_holds,
    payment,
    settler,
    ts,
)
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = NOW.astimezone(SHANGHAI)
_merchants = count(1)


def promotions(suite: Suite) -> ppb_grpc.PromotionsServiceStub:
    return ppb_grpc.PromotionsServiceStub(suite.points_channel)


def marketing(suite: Suite) -> Metadata:
    return suite.auth("marketing")


def a_merchant() -> str:
    return f"camp-merchant-{next(_merchants)}"


def campaign(
    merchant_id: str,
    *,
    multiplier_bps: int = 20_000,
    fixed_points: int = 0,
    budget: ppb.CampaignBudget | None = None,
    days_of_month: tuple[int, ...] = (),
    days_of_week: tuple[int, ...] = (),
    channels: tuple[str, ...] = (),
    minimum_amount: pb.Money | None = None,
    first_payment: bool = False,
    **terms: int | bool,
) -> ppb.Campaign:
    """A campaign for one merchant's payments (so that the campaigns of a test touch only
    its payments) in a window around now; `terms`: priority, exclusive, cap_per_payment,
    tier_qualifying."""
    if fixed_points:
        effect = ppb.CampaignEffect(kind=ppb.CampaignEffect.KIND_FIXED_POINTS, points=fixed_points)
    else:
        effect = ppb.CampaignEffect(
            kind=ppb.CampaignEffect.KIND_MULTIPLIER, multiplier_bps=multiplier_bps
        )
    return ppb.Campaign(
        display_name="Member day",
        start_time=ts(NOW - timedelta(days=3)),
        end_time=ts(NOW + timedelta(days=3)),
        effect=effect,
        schedule=ppb.CampaignSchedule(days_of_month=days_of_month, days_of_week=days_of_week),
        audience=ppb.CampaignAudience(
            merchant_ids=[merchant_id],
            channels=channels,
            minimum_amount=minimum_amount,
            first_payment=first_payment,
        ),
        budget=budget,
        **terms,  # type: ignore[arg-type]
    )


async def started(suite: Suite, campaign_id: str, message: ppb.Campaign) -> ppb.Campaign:
    stub = promotions(suite)
    await stub.CreateCampaign(
        ppb.CreateCampaignRequest(campaign_id=campaign_id, campaign=message),
        metadata=marketing(suite),
    )
    running: ppb.Campaign = await stub.ActivateCampaign(
        ppb.ActivateCampaignRequest(name=f"campaigns/{campaign_id}"), metadata=marketing(suite)
    )
    return running


def at(merchant_id: str, request: pb.SettlePaymentRequest) -> pb.SettlePaymentRequest:
    request.merchant_id = merchant_id
    return request


async def settle(suite: Suite, request: pb.SettlePaymentRequest) -> pb.Settlement:
    settled: pb.Settlement = await suite.points.SettlePayment(request, metadata=settler(suite))
    return settled


async def explained(suite: Suite, settled: pb.Settlement) -> dict[str, object]:
    got = await suite.points.ExplainTransaction(
        pb.ExplainTransactionRequest(name=settled.transaction), metadata=suite.auth("officer")
    )
    return {"steps": [(s.name, s.value) for s in got.steps], "sentence": got.sentence}


async def test_a_member_day_doubles_points_and_is_explained(suite: Suite) -> None:
    merchant = a_merchant()
    running = await started(suite, "double-8th", campaign(merchant, days_of_month=(TODAY.day,)))
    assert (running.state, running.version) == (ppb.Campaign.STATE_ACTIVE, 1)
    member_id = await known_member(suite)
    # 12.34 CNY at dining x2 is 24.68: 24 from the program, and x2 gives 24 more
    settled = await settle(suite, at(merchant, payment(member_id, "md-1", 1234, "dining")))
    assert settled.points == 48
    again = await settle(suite, at(merchant, payment(member_id, "md-1", 1234, "dining")))
    assert again.points == 48 and again.transaction == settled.transaction
    # a payment at another merchant is not reached
    other = await settle(suite, payment(member_id, "md-2", 1234, "dining"))
    assert other.points == 24
    explanation = await explained(suite, settled)
    steps = explanation["steps"]
    assert isinstance(steps, list)
    assert ("campaign", "24") in steps and steps[-1] == ("total", "48")
    assert "Member day" in str(explanation["sentence"])
    got = await promotions(suite).GetCampaign(
        ppb.GetCampaignRequest(name="campaigns/double-8th"), metadata=suite.auth("officer")
    )
    assert (got.points_given, got.awards_given) == (24, 1)
    assert (await balance(suite, member_id)).pending == 72
    await ledger_holds(suite.dsn)


async def test_the_schedule_names_the_days(suite: Suite) -> None:
    merchant = a_merchant()
    other_day = (TODAY.day % 28) + 1
    await started(suite, "not-today", campaign(merchant, days_of_month=(other_day,)))
    weekday = TODAY.isoweekday()
    await started(suite, "today", campaign(merchant, fixed_points=7, days_of_week=(weekday,)))
    member_id = await known_member(suite)
    settled = await settle(suite, at(merchant, payment(member_id, "s-1", 1000, "retail")))
    assert settled.points == 10 + 7  # only the campaign of today's weekday


async def test_stacking_priority_exclusive_and_caps(suite: Suite) -> None:
    merchant = a_merchant()
    await started(suite, "low", campaign(merchant, fixed_points=5, priority=1))
    await started(suite, "capped", campaign(merchant, multiplier_bps=50_000, cap_per_payment=30))
    member_id = await known_member(suite)
    # 20.00 CNY retail: 20 from the program, x5 would add 80 (capped at 30), and 5 fixed
    settled = await settle(suite, at(merchant, payment(member_id, "st-1", 2000, "retail")))
    assert settled.points == 20 + 30 + 5
    await started(suite, "alone", campaign(merchant, fixed_points=100, priority=9, exclusive=True))
    alone = await settle(suite, at(merchant, payment(member_id, "st-2", 2000, "retail")))
    assert alone.points == 20 + 100
    # a second exclusive campaign in an overlapping window cannot run
    stub = promotions(suite)
    await stub.CreateCampaign(
        ppb.CreateCampaignRequest(
            campaign_id="rival", campaign=campaign(merchant, fixed_points=1, exclusive=True)
        ),
        metadata=marketing(suite),
    )
    error = await expect_error(
        stub.ActivateCampaign(
            ppb.ActivateCampaignRequest(name="campaigns/rival"), metadata=marketing(suite)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="CAMPAIGN_OVERLAPS_EXCLUSIVE",
    )
    assert error.metadata["campaign_id"] == "alone"


async def test_bad_campaigns_name_every_fault_and_write_nothing(suite: Suite) -> None:
    stub = promotions(suite)
    bad = campaign("m", multiplier_bps=10_000, priority=5000)
    bad.start_time.CopyFrom(ts(NOW + timedelta(days=5)))
    bad.end_time.CopyFrom(ts(NOW + timedelta(days=4)))
    bad.audience.tiers.append("platinum")
    bad.audience.merchant_categories.extend(["top_up", "no_such_category"])
    bad.audience.minimum_amount.CopyFrom(pb.Money(currency_code="EUR", amount_minor=100))
    bad.budget.total.points = -5
    error = await expect_error(
        stub.CreateCampaign(
            ppb.CreateCampaignRequest(campaign_id="bad", campaign=bad), metadata=marketing(suite)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fields = error.fields
    assert {
        "campaign.end_time",
        "campaign.effect.multiplier_bps",
        "campaign.priority",
        "campaign.audience.tiers[0]",
        "campaign.audience.categories[0]",
        "campaign.audience.categories[1]",
        "campaign.audience.minimum_amount.currency_code",
        "campaign.budget.total.points",
    } <= fields
    past = campaign("m")
    past.start_time.CopyFrom(ts(NOW - timedelta(days=9)))
    past.end_time.CopyFrom(ts(NOW - timedelta(days=8)))
    await expect_error(
        stub.CreateCampaign(
            ppb.CreateCampaignRequest(campaign_id="past", campaign=past), metadata=marketing(suite)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    no_effect = campaign("m")
    no_effect.ClearField("effect")
    await expect_error(
        stub.CreateCampaign(
            ppb.CreateCampaignRequest(campaign_id="x", campaign=no_effect),
            metadata=marketing(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_error(
        stub.CreateCampaign(
            ppb.CreateCampaignRequest(campaign_id="Bad Id", campaign=campaign("m")),
            metadata=marketing(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    listed = await stub.ListCampaigns(ppb.ListCampaignsRequest(), metadata=marketing(suite))
    assert list(listed.campaigns) == []
    # the categories a campaign may name are the program's, as GetProgram shows them
    program = await suite.points.GetProgram(
        pb.GetProgramRequest(name="program"), metadata=marketing(suite)
    )
    assert {"dining", "retail", "top_up"} <= set(program.earning.known_categories)
    assert "no_such_category" not in program.earning.known_categories
    for role in ("wallet-backend", "settlement", "officer"):
        await expect_error(
            stub.CreateCampaign(
                ppb.CreateCampaignRequest(campaign_id="ok", campaign=campaign("m")),
                metadata=suite.auth(role),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )


async def test_the_lifecycle_versions_and_repeats(suite: Suite) -> None:
    stub, who = promotions(suite), marketing(suite)
    name = "campaigns/life"
    draft = campaign("m-life", fixed_points=5)
    created = await stub.CreateCampaign(
        ppb.CreateCampaignRequest(campaign_id="life", campaign=draft), metadata=who
    )
    assert (created.state, created.version) == (ppb.Campaign.STATE_DRAFT, 1)
    # the same terms again answer the draft; other terms are another campaign
    again = await stub.CreateCampaign(
        ppb.CreateCampaignRequest(campaign_id="life", campaign=draft), metadata=who
    )
    assert again.create_time == created.create_time
    await expect_error(
        stub.CreateCampaign(
            ppb.CreateCampaignRequest(campaign_id="life", campaign=campaign("m-life")),
            metadata=who,
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="CAMPAIGN_EXISTS",
    )
    edited = campaign(
        "m-life", fixed_points=6, budget=ppb.CampaignBudget(total=ppb.CampaignLimit(points=1000))
    )
    edited.name = name
    updated = await stub.UpdateCampaign(ppb.UpdateCampaignRequest(campaign=edited), metadata=who)
    assert (updated.version, updated.effect.points) == (1, 6)
    active = await stub.ActivateCampaign(ppb.ActivateCampaignRequest(name=name), metadata=who)
    assert active.state == ppb.Campaign.STATE_ACTIVE
    repeat = await stub.ActivateCampaign(ppb.ActivateCampaignRequest(name=name), metadata=who)
    assert repeat.update_time == active.update_time
    edited.effect.points = 8
    running = await stub.UpdateCampaign(ppb.UpdateCampaignRequest(campaign=edited), metadata=who)
    assert (running.version, running.effect.points, running.state) == (
        2,
        8,
        ppb.Campaign.STATE_ACTIVE,
    )
    member_id = await known_member(suite)
    settled = await settle(suite, at("m-life", payment(member_id, "l-1", 1000, "retail")))
    assert settled.points == 10 + 8
    edited.budget.total.points = 2000
    await expect_error(
        stub.UpdateCampaign(ppb.UpdateCampaignRequest(campaign=edited), metadata=who),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="CAMPAIGN_BUDGET_FIXED",
    )
    ended = await stub.EndCampaign(ppb.EndCampaignRequest(name=name), metadata=who)
    assert ended.state == ppb.Campaign.STATE_ENDED
    assert (await stub.EndCampaign(ppb.EndCampaignRequest(name=name), metadata=who)).state == (
        ppb.Campaign.STATE_ENDED
    )
    after = await settle(suite, at("m-life", payment(member_id, "l-2", 1000, "retail")))
    assert after.points == 10
    await expect_error(
        stub.UpdateCampaign(ppb.UpdateCampaignRequest(campaign=edited), metadata=who),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="CAMPAIGN_ENDED",
    )
    await expect_error(
        stub.ActivateCampaign(ppb.ActivateCampaignRequest(name=name), metadata=who),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="CAMPAIGN_NOT_DRAFT",
    )
    await expect_error(
        stub.GetCampaign(ppb.GetCampaignRequest(name="campaigns/none"), metadata=who),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_listing_filters_and_pages(suite: Suite) -> None:
    stub, who = promotions(suite), marketing(suite)
    for i in range(5):
        await stub.CreateCampaign(
            ppb.CreateCampaignRequest(campaign_id=f"list-{i}", campaign=campaign("m")),
            metadata=who,
        )
    await stub.ActivateCampaign(ppb.ActivateCampaignRequest(name="campaigns/list-3"), metadata=who)
    seen, token = [], ""
    while True:
        page = await stub.ListCampaigns(
            ppb.ListCampaignsRequest(page_size=2, page_token=token), metadata=who
        )
        seen += [c.name for c in page.campaigns]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"campaigns/list-{i}" for i in range(5)]
    active = await stub.ListCampaigns(
        ppb.ListCampaignsRequest(states=[ppb.Campaign.STATE_ACTIVE], active_at=ts(NOW)),
        metadata=who,
    )
    assert [c.name for c in active.campaigns] == ["campaigns/list-3"]
    later = await stub.ListCampaigns(
        ppb.ListCampaignsRequest(active_at=ts(NOW + timedelta(days=30))), metadata=who
    )
    assert list(later.campaigns) == []
    await expect_error(
        stub.ListCampaigns(ppb.ListCampaignsRequest(page_size=1000), metadata=who),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_a_budget_of_100_awards_gives_exactly_100_under_1000_settlements(
    suite: Suite, db: asyncpg.Connection
) -> None:
    merchant = a_merchant()
    budget = ppb.CampaignBudget(total=ppb.CampaignLimit(awards=100))
    await started(suite, "hundred", campaign(merchant, fixed_points=3, budget=budget))
    members = [await known_member(suite) for _ in range(50)]

    # 200 in flight: below the server's concurrent-RPC bound (256), so none is turned away
    in_flight = asyncio.Semaphore(200)

    async def one(i: int) -> int:
        request = at(merchant, payment(members[i % 50], f"b-{i}", 1000, "retail"))
        async with in_flight:
            return (await settle(suite, request)).points

    points = await asyncio.gather(*(one(i) for i in range(1000)))
    assert sorted(set(points)) == [10, 13]
    assert points.count(13) == 100
    left = await db.fetch(
        "SELECT points_left, awards_left FROM points.campaign_budget_slices"
        " WHERE campaign_id = 'hundred'"
    )
    assert sum(r["awards_left"] for r in left) == 0
    given = await db.fetchval(
        "SELECT count(*) FROM points.transactions WHERE explanation -> 'steps' @>"
        """ '[{"name": "campaign", "campaign_id": "hundred", "version": 1}]'"""
    )
    results = await db.fetchrow(
        "SELECT sum(points) AS points, sum(awards) AS awards FROM points.campaign_results"
        " WHERE campaign_id = 'hundred'"
    )
    assert results is not None
    assert (given, results["points"], results["awards"]) == (100, 300, 100)
    await ledger_holds(suite.dsn)


async def test_member_and_daily_budgets(suite: Suite) -> None:
    merchant = a_merchant()
    budget = ppb.CampaignBudget(
        per_member=ppb.CampaignLimit(awards=2), per_day=ppb.CampaignLimit(points=25)
    )
    await started(suite, "limits", campaign(merchant, fixed_points=10, budget=budget))
    first, second = await known_member(suite), await known_member(suite)
    got = [
        (await settle(suite, at(merchant, payment(first, f"mb-{i}", 1000, "retail")))).points
        for i in range(3)
    ]
    assert got == [20, 20, 10]  # the member's two awards
    # the day's 25 points: 20 went to the first member, 5 are left
    other = await settle(suite, at(merchant, payment(second, "mb-x", 1000, "retail")))
    assert other.points == 10 + 5
    none_left = await settle(suite, at(merchant, payment(second, "mb-y", 1000, "retail")))
    assert none_left.points == 10


async def test_campaign_points_count_toward_tiers_only_when_qualifying(
    suite: Suite, db: asyncpg.Connection
) -> None:
    merchant = a_merchant()
    await started(suite, "plain", campaign(merchant, fixed_points=40))
    member_id = await known_member(suite)
    settled = await settle(suite, at(merchant, payment(member_id, "q-1", 1000, "retail")))
    assert settled.points == 50
    qualifying = await db.fetchval(
        "SELECT sum(points) FROM points.qualifying_days WHERE member_id = $1", member_id
    )
    daily = await db.fetchval(
        "SELECT sum(points) FROM points.daily_earnings WHERE member_id = $1", member_id
    )
    assert (qualifying, daily) == (10, 10)
    # a full refund claws the campaign's points back too, and the qualifying share only
    await suite.points.RefundPayment(refund(member_id, "q-1", "rq-1", 600), metadata=settler(suite))
    await suite.points.RefundPayment(refund(member_id, "q-1", "rq-2", 400), metadata=settler(suite))
    assert (await balance(suite, member_id)).pending == 0
    qualifying = await db.fetchval(
        "SELECT sum(points) FROM points.qualifying_days WHERE member_id = $1", member_id
    )
    assert qualifying == 0
    # the clawback returns nothing to the budget; the campaign still counts its award
    given = await db.fetchval(
        "SELECT sum(points) FROM points.campaign_results WHERE campaign_id = 'plain'"
    )
    assert given == 40
    merchant2 = a_merchant()
    await started(suite, "counts", campaign(merchant2, fixed_points=40, tier_qualifying=True))
    other = await known_member(suite)
    await settle(suite, at(merchant2, payment(other, "q-2", 1000, "retail")))
    qualifying = await db.fetchval(
        "SELECT sum(points) FROM points.qualifying_days WHERE member_id = $1", other
    )
    assert qualifying == 50
    await ledger_holds(suite.dsn)


async def test_audiences_minimum_channel_first_payment_and_batches(suite: Suite) -> None:
    merchant = a_merchant()
    minimum = pb.Money(currency_code="CNY", amount_minor=5000)
    await started(suite, "big", campaign(merchant, fixed_points=9, minimum_amount=minimum))
    await started(suite, "pos", campaign(merchant, fixed_points=4, channels=("pos",)))
    await started(suite, "welcome", campaign(merchant, fixed_points=50, first_payment=True))
    member_id = await known_member(suite)
    requests = [
        at(merchant, payment(member_id, "a-1", 1000, "retail")),
        at(merchant, payment(member_id, "a-2", 6000, "retail")),
        at(merchant, payment(member_id, "a-3", 1000, "retail")),
    ]
    requests[2].channel = "pos"
    response = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=requests), metadata=settler(suite)
    )
    assert [r.settlement.points for r in response.results] == [10 + 50, 60 + 9, 10 + 4]
    # a non-earning category gets no campaign points
    top_up = await settle(suite, at(merchant, payment(member_id, "a-4", 6000, "top_up")))
    assert top_up.points == 0
    steps = (await explained(suite, response.results[0].settlement))["steps"]
    assert isinstance(steps, list) and steps[-1] == ("total", "60")


async def test_a_bad_token_cannot_reach_promotions(suite: Suite) -> None:
    stub = promotions(suite)
    try:
        await stub.ListCampaigns(ppb.ListCampaignsRequest())
    except grpc.aio.AioRpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    else:
        raise AssertionError("an unauthenticated call was served")


async def test_a_simulation_runs_terms_over_past_payments_and_writes_nothing(
    suite: Suite, db: asyncpg.Connection
) -> None:
    merchant = a_merchant()
    members = [await known_member(suite) for _ in range(2)]
    days_ago = [4, 3, 3, 2, 1]
    for i, ago in enumerate(days_ago):
        when = NOW - timedelta(days=ago)
        request = at(merchant, payment(members[i % 2], f"sim-{i}", 1000, "retail", occurred=when))
        await settle(suite, request)
    await settle(suite, payment(members[0], "sim-other", 1000, "retail"))  # another merchant
    stub, who = promotions(suite), marketing(suite)
    draft = campaign(
        merchant, fixed_points=10, budget=ppb.CampaignBudget(total=ppb.CampaignLimit(awards=3))
    )
    start, end = ts(NOW - timedelta(days=10)), ts(NOW - timedelta(hours=1))
    got = await stub.SimulateCampaign(
        ppb.SimulateCampaignRequest(campaign=draft, start_time=start, end_time=end), metadata=who
    )
    assert (got.points, got.awards, got.payments_reached, got.members_reached) == (30, 3, 5, 2)
    assert got.payments_over_budget == 2 and not got.truncated
    assert got.payments_scanned == 5  # the one at another merchant occurred after the period
    # the third award used the budget up: the payment of 3 days ago, settled second that day
    assert got.budget_exhausted_time.ToDatetime(tzinfo=UTC) == (NOW - timedelta(days=3))
    assert sum(d.awards for d in got.days) == 3
    # a stored draft, by name; a member day that does not fall in the period gives nothing
    other_day = ((NOW - timedelta(days=6)).astimezone(SHANGHAI)).day
    await stub.CreateCampaign(
        ppb.CreateCampaignRequest(
            campaign_id="sim-draft",
            campaign=campaign(merchant, fixed_points=5, days_of_month=(other_day,)),
        ),
        metadata=who,
    )
    by_name = await stub.SimulateCampaign(
        ppb.SimulateCampaignRequest(
            name="campaigns/sim-draft",
            start_time=ts(NOW - timedelta(days=3, hours=12)),
            end_time=ts(NOW - timedelta(hours=1)),
        ),
        metadata=who,
    )
    assert (by_name.points, by_name.payments_scanned) == (0, 4)
    assert await db.fetchval("SELECT count(*) FROM points.campaign_results") == 0
    # bad periods and requests
    for bad in (
        ppb.SimulateCampaignRequest(
            campaign=draft,
            start_time=ts(NOW - timedelta(days=1)),
            end_time=ts(NOW + timedelta(days=1)),
        ),
        ppb.SimulateCampaignRequest(
            campaign=draft,
            start_time=ts(NOW - timedelta(days=200)),
            end_time=ts(NOW - timedelta(days=1)),
        ),
        ppb.SimulateCampaignRequest(
            name="campaigns/sim-draft", campaign=draft, start_time=start, end_time=end
        ),
        ppb.SimulateCampaignRequest(start_time=start, end_time=end),
    ):
        await expect_error(
            stub.SimulateCampaign(bad, metadata=who), grpc.StatusCode.INVALID_ARGUMENT
        )
    await expect_error(
        stub.SimulateCampaign(
            ppb.SimulateCampaignRequest(name="campaigns/none", start_time=start, end_time=end),
            metadata=who,
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_error(
        stub.SimulateCampaign(
            ppb.SimulateCampaignRequest(campaign=draft, start_time=start, end_time=end),
            metadata=suite.auth("officer"),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
