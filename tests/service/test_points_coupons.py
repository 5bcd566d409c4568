"""Coupons through PromotionsService: templates, issue, a member's wallet, reservation at
checkout, redemption by the payment's settlement, refunds and expiry."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import promotions_pb2 as ppb
from membership.points.v1 import promotions_pb2_grpc as ppb_grpc

from services.points.jobs import JobRunner
from services.points.program import load_rules_file
from services.points.rewards import load_catalogue_file
from services.points.settings import DEFAULT_RULES_FILE
from services.points.store.rewards import sync_catalogue
from tests.service.test_points_refunds import refund
from tests.service.test_points_settlement import NOW, known_member, payment, settler, ts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

AMOUNT_OFF = ppb.CouponTemplate.KIND_AMOUNT_OFF
PERCENT_OFF = ppb.CouponTemplate.KIND_PERCENT_OFF
ISSUED, RESERVED, REDEEMED, EXPIRED = (
    ppb.Coupon.STATE_ISSUED,
    ppb.Coupon.STATE_RESERVED,
    ppb.Coupon.STATE_REDEEMED,
    ppb.Coupon.STATE_EXPIRED,
)


def stub(suite: Suite) -> ppb_grpc.PromotionsServiceStub:
    return ppb_grpc.PromotionsServiceStub(suite.points_channel)


def marketing(suite: Suite) -> Metadata:
    return suite.auth("marketing")


def wallet(suite: Suite) -> Metadata:
    return suite.auth("wallet-backend")


def template(**fields: object) -> ppb.CouponTemplate:
    message = ppb.CouponTemplate(
        display_name="¥10 off",
        kind=AMOUNT_OFF,
        currency_code="CNY",
        amount_off_minor=1000,
        valid_days=30,
    )
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(message, name).extend(value)
        elif hasattr(value, "CopyFrom"):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


async def created(suite: Suite, template_id: str, message: ppb.CouponTemplate) -> None:
    await stub(suite).CreateCouponTemplate(
        ppb.CreateCouponTemplateRequest(template_id=template_id, template=message),
        metadata=marketing(suite),
    )


async def issue(
    suite: Suite, template_id: str, members: list[str], request_id: str
) -> ppb.IssueCouponsResponse:
    response: ppb.IssueCouponsResponse = await stub(suite).IssueCoupons(
        ppb.IssueCouponsRequest(
            template=f"couponTemplates/{template_id}",
            members=[f"members/{m}" for m in members],
            request_id=request_id,
        ),
        metadata=marketing(suite),
    )
    return response


async def one_coupon(
    suite: Suite, template_id: str, message: ppb.CouponTemplate | None = None
) -> tuple[str, ppb.Coupon]:
    await created(suite, template_id, message or template())
    member_id = await known_member(suite)
    got = await issue(suite, template_id, [member_id], "issue-1")
    return member_id, got.results[0].coupon


async def wallet_of(
    suite: Suite, member_id: str, *states: ppb.Coupon.State.ValueType
) -> list[ppb.Coupon]:
    got = await stub(suite).ListMemberCoupons(
        ppb.ListMemberCouponsRequest(member=f"members/{member_id}", states=states),
        metadata=wallet(suite),
    )
    return list(got.coupons)


async def test_bad_templates_name_every_fault_and_repeats_answer_the_template(
    suite: Suite,
) -> None:
    bad = template(
        display_name="",
        kind=PERCENT_OFF,
        percent_off_bps=12_000,
        currency_code="EUR",
        min_spend_minor=-1,
        merchant_categories=["top_up", "nonsense"],
        valid_until=ts(NOW - timedelta(days=1)),
        tiers=["platinum"],
    )
    error = await expect_error(
        stub(suite).CreateCouponTemplate(
            ppb.CreateCouponTemplateRequest(template_id="bad", template=bad),
            metadata=marketing(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert {
        "template.display_name",
        "template.percent_off_bps",
        "template.currency_code",
        "template.min_spend.amount_minor",
        "template.merchant_categories[0]",
        "template.merchant_categories[1]",
        "template.validity",
        "template.tiers[0]",
    } <= error.fields
    await created(suite, "ten-off", template())
    await created(suite, "ten-off", template())  # the same terms: the template again
    await expect_error(
        stub(suite).CreateCouponTemplate(
            ppb.CreateCouponTemplateRequest(template_id="ten-off", template=template(stock=5)),
            metadata=marketing(suite),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="COUPON_TEMPLATE_EXISTS",
    )
    await expect_error(
        stub(suite).CreateCouponTemplate(
            ppb.CreateCouponTemplateRequest(template_id="w", template=template()),
            metadata=wallet(suite),
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    got = await stub(suite).GetCouponTemplate(
        ppb.GetCouponTemplateRequest(name="couponTemplates/ten-off"), metadata=suite.auth("officer")
    )
    assert (got.amount_off_minor, got.valid_days, got.active) == (1000, 30, True)
    listed = await stub(suite).ListCouponTemplates(
        ppb.ListCouponTemplatesRequest(), metadata=marketing(suite)
    )
    assert [t.name for t in listed.templates] == ["couponTemplates/ten-off"]


async def test_bulk_issue_is_idempotent_bounded_by_stock_and_the_member_limit(
    suite: Suite,
) -> None:
    await created(suite, "limited", template(stock=3, per_member_limit=1))
    members = [await known_member(suite) for _ in range(3)]
    frozen = await known_member(suite, pb.MEMBER_STATE_FROZEN)
    first = await issue(suite, "limited", [*members[:2], frozen, "mnobody"], "bulk-1")
    assert (first.issued, first.repeated, first.failed) == (2, 0, 2)
    assert [r.error_reason for r in first.results] == ["", "", "MEMBER_FROZEN", "MEMBER_UNKNOWN"]
    codes = {r.coupon.code for r in first.results if r.coupon.code}
    assert len(codes) == 2 and all(len(c) == 26 for c in codes)
    await created(suite, "other-template", template())
    reused = await issue(suite, "other-template", [members[0]], "bulk-1")
    assert reused.results[0].error_reason == "IDEMPOTENCY_KEY_REUSED"
    again = await issue(suite, "limited", members, "bulk-1")
    assert (again.issued, again.repeated, again.failed) == (1, 2, 0)
    assert {r.coupon.code for r in again.results[:2]} == codes
    # the stock is used up; and a second issue would pass the per-member limit anyway
    more = await issue(suite, "limited", [await known_member(suite), members[0]], "bulk-2")
    assert [r.error_reason for r in more.results] == [
        "COUPON_OUT_OF_STOCK",
        "COUPON_PER_MEMBER_LIMIT",
    ]
    left = await stub(suite).GetCouponTemplate(
        ppb.GetCouponTemplateRequest(name="couponTemplates/limited"), metadata=marketing(suite)
    )
    assert left.stock_left == 0
    await expect_error(
        stub(suite).IssueCoupons(
            ppb.IssueCouponsRequest(
                template="couponTemplates/limited",
                members=[f"members/m{i}" for i in range(1001)],
                request_id="too-many",
            ),
            metadata=marketing(suite),
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_the_wallet_lists_soonest_expiring_first_and_only_its_own(suite: Suite) -> None:
    await created(suite, "long", template(valid_days=60))
    await created(suite, "short", template(valid_days=5))
    member_id, other = await known_member(suite), await known_member(suite)
    await issue(suite, "long", [member_id], "w-1")
    await issue(suite, "short", [member_id], "w-2")
    coupons = await wallet_of(suite, member_id)
    assert [c.template for c in coupons] == ["couponTemplates/short", "couponTemplates/long"]
    assert await wallet_of(suite, other) == []
    assert len(await wallet_of(suite, member_id, REDEEMED)) == 0
    # the balance's "expiring soon" shows them too, soonest first
    balance = await suite.points.GetBalance(
        pb.GetBalanceRequest(name=f"members/{member_id}/balance"), metadata=wallet(suite)
    )
    assert [c.template for c in balance.expiring_coupons] == [
        "couponTemplates/short",
        "couponTemplates/long",
    ]
    assert balance.expiring_coupons[0].coupon == coupons[0].name
    page = await stub(suite).ListMemberCoupons(
        ppb.ListMemberCouponsRequest(member=f"members/{member_id}", page_size=1),
        metadata=wallet(suite),
    )
    rest = await stub(suite).ListMemberCoupons(
        ppb.ListMemberCouponsRequest(
            member=f"members/{member_id}", page_size=1, page_token=page.next_page_token
        ),
        metadata=wallet(suite),
    )
    assert [c.template for c in [*page.coupons, *rest.coupons]] == [
        "couponTemplates/short",
        "couponTemplates/long",
    ]
    assert rest.next_page_token == ""


async def test_one_of_100_concurrent_reservations_wins_and_the_settlement_redeems_it(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id, coupon = await one_coupon(suite, "race")

    async def reserve(i: int) -> str:
        try:
            await stub(suite).ReserveCoupon(
                ppb.ReserveCouponRequest(name=coupon.name, payment_id=f"pay-{i}"),
                metadata=wallet(suite),
            )
        except grpc.aio.AioRpcError as err:
            return str(err.code().name)
        return f"pay-{i}"

    outcomes = await asyncio.gather(*(reserve(i) for i in range(100)))
    winners = [o for o in outcomes if o.startswith("pay-")]
    assert len(winners) == 1 and outcomes.count("FAILED_PRECONDITION") == 99
    # the same code under another member is no coupon at all
    other = await known_member(suite)
    await expect_error(
        stub(suite).ReserveCoupon(
            ppb.ReserveCouponRequest(name=f"members/{other}/coupons/{coupon.code}", payment_id="x"),
            metadata=wallet(suite),
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await suite.points.SettlePayment(payment(member_id, winners[0], 5000), metadata=settler(suite))
    (used,) = await wallet_of(suite, member_id)
    assert (used.state, used.payment_id) == (REDEEMED, winners[0])
    await expect_error(
        stub(suite).ReserveCoupon(
            ppb.ReserveCouponRequest(name=coupon.name, payment_id="pay-again"),
            metadata=wallet(suite),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_USED",
    )
    # a full refund gives it back
    await suite.points.RefundPayment(
        refund(member_id, winners[0], "r-all", 5000), metadata=settler(suite)
    )
    (back,) = await wallet_of(suite, member_id)
    assert back.state == ISSUED


async def test_release_partial_refunds_and_lapsed_reservations(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    member_id, coupon = await one_coupon(suite, "held")
    name, api = coupon.name, stub(suite)
    held = await api.ReserveCoupon(
        ppb.ReserveCouponRequest(name=name, payment_id="p-1"), metadata=wallet(suite)
    )
    assert held.state == RESERVED and held.payment_id == "p-1"
    again = await api.ReserveCoupon(
        ppb.ReserveCouponRequest(name=name, payment_id="p-1"), metadata=wallet(suite)
    )
    assert again.reserve_expire_time == held.reserve_expire_time  # a repeat
    await expect_error(
        api.ReleaseCoupon(
            ppb.ReleaseCouponRequest(name=name, payment_id="p-2"), metadata=wallet(suite)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_RESERVED",
    )
    # one coupon per payment: a second coupon of the member cannot be held for p-1
    await created(suite, "held-too", template())
    (other,) = (await issue(suite, "held-too", [member_id], "issue-2")).results
    await expect_error(
        api.ReserveCoupon(
            ppb.ReserveCouponRequest(name=other.coupon.name, payment_id="p-1"),
            metadata=wallet(suite),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_PAYMENT_HAS_ONE",
    )
    released = await api.ReleaseCoupon(
        ppb.ReleaseCouponRequest(name=name, payment_id="p-1"), metadata=wallet(suite)
    )
    assert released.state == ISSUED
    # a reservation that lapses makes the coupon usable again, but its late settlement
    # still redeems it
    late = await api.ReserveCoupon(
        ppb.ReserveCouponRequest(name=name, payment_id="p-3"), metadata=wallet(suite)
    )
    lapse = late.reserve_expire_time.ToDatetime(tzinfo=UTC) + timedelta(seconds=1)
    await JobRunner(pool).run_once(lapse)
    lapsed = next(c for c in await wallet_of(suite, member_id) if c.name == name)
    assert lapsed.state == ISSUED
    await suite.points.SettlePayment(payment(member_id, "p-3", 4000), metadata=settler(suite))
    used = next(c for c in await wallet_of(suite, member_id) if c.name == name)
    assert used.state == REDEEMED
    # a partial refund keeps it used
    await suite.points.RefundPayment(
        refund(member_id, "p-3", "r-part", 1000), metadata=settler(suite)
    )
    assert next(c for c in await wallet_of(suite, member_id) if c.name == name).state == REDEEMED


async def test_an_admin_revokes_a_coupon(suite: Suite) -> None:
    _, coupon = await one_coupon(suite, "revoked")
    api, admin = stub(suite), suite.auth("admin")
    await expect_error(
        api.RevokeCoupon(
            ppb.RevokeCouponRequest(name=coupon.name, reason="abuse"), metadata=marketing(suite)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    gone = await api.RevokeCoupon(
        ppb.RevokeCouponRequest(name=coupon.name, reason="abuse"), metadata=admin
    )
    again = await api.RevokeCoupon(
        ppb.RevokeCouponRequest(name=coupon.name, reason="abuse"), metadata=admin
    )
    assert gone.state == again.state == ppb.Coupon.STATE_REVOKED
    await expect_error(
        api.ReserveCoupon(
            ppb.ReserveCouponRequest(name=coupon.name, payment_id="p"), metadata=wallet(suite)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_REVOKED",
    )
    await expect_error(
        api.RevokeCoupon(ppb.RevokeCouponRequest(name=coupon.name, reason=""), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_coupons_expire_and_the_expiry_job_writes_it(
    suite: Suite, pool: asyncpg.Pool
) -> None:
    member_id, _ = await one_coupon(suite, "brief", template(valid_days=2))
    assert (await wallet_of(suite, member_id))[0].state == ISSUED
    await JobRunner(pool).run_once(datetime.now(UTC) + timedelta(days=3))
    (gone,) = await wallet_of(suite, member_id)
    assert gone.state == EXPIRED
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT state FROM points.coupons WHERE member_id = $1", member_id)
            == "EXPIRED"
        )
    await expect_error(
        stub(suite).ReserveCoupon(
            ppb.ReserveCouponRequest(name=gone.name, payment_id="late"), metadata=wallet(suite)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_EXPIRED",
    )


async def test_a_quote_weighs_the_tier_and_every_coupon_and_writes_nothing(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await known_member(suite)
    # 500 CNY at dining earns 1,000 qualifying points: silver, 1 % off, x1.25
    await suite.points.SettlePayment(
        payment(member_id, "q-tier", 50_000, "dining"), metadata=settler(suite)
    )
    await created(suite, "ten-off-100", template(min_spend_minor=10_000))
    await created(
        suite,
        "five-percent",
        template(
            kind=PERCENT_OFF,
            amount_off_minor=0,
            percent_off_bps=500,
            max_off_minor=1500,
            stacks_with_tier_discount=True,
        ),
    )
    await created(suite, "big-spend", template(min_spend_minor=50_000))
    for template_id in ("ten-off-100", "five-percent", "big-spend"):
        await issue(suite, template_id, [member_id], f"q-{template_id}")
    api = stub(suite)
    await api.CreateCampaign(
        ppb.CreateCampaignRequest(
            campaign_id="q-bonus",
            campaign=ppb.Campaign(
                display_name="Shop bonus",
                start_time=ts(NOW - timedelta(days=1)),
                end_time=ts(NOW + timedelta(days=2)),
                effect=ppb.CampaignEffect(kind=ppb.CampaignEffect.KIND_FIXED_POINTS, points=7),
                audience=ppb.CampaignAudience(merchant_ids=["q-shop"]),
            ),
        ),
        metadata=marketing(suite),
    )
    await api.ActivateCampaign(
        ppb.ActivateCampaignRequest(name="campaigns/q-bonus"), metadata=marketing(suite)
    )
    before = await db.fetchval("SELECT count(*) FROM points.transactions")
    request = ppb.QuoteCheckoutRequest(
        member=f"members/{member_id}",
        amount=pb.Money(currency_code="CNY", amount_minor=20_000),
        merchant_id="q-shop",
        merchant_category="retail",
        channel="app",
    )
    quote = await api.QuoteCheckout(request, metadata=wallet(suite))
    assert (quote.tier, quote.tier_discount_minor, quote.tier_discount_applied) == (
        "silver",
        200,
        True,
    )
    # 5 % of what is left after the tier's 200 is 990, beside the tier's: 1,190 in all
    assert quote.best_coupon.template == "couponTemplates/five-percent"
    assert (quote.total_discount_minor, quote.charge.amount_minor) == (1190, 18_810)
    offers = {o.coupon.template: o for o in quote.offers}
    assert offers["couponTemplates/ten-off-100"].discount_minor == 1000
    assert "at least 50000" in offers["couponTemplates/big-spend"].not_usable_because
    # 188.10 CNY at x1.25 is 235.125: 235 points, and the campaign's 7
    assert (quote.points, quote.campaign_points) == (242, 7)
    assert [s.name for s in quote.steps][:4] == ["amount", "tier_discount", "coupon", "charge"]
    assert await db.fetchval("SELECT count(*) FROM points.transactions") == before
    # only the coupons asked for are weighed
    only = ppb.QuoteCheckoutRequest()
    only.CopyFrom(request)
    only.coupons.append(offers["couponTemplates/ten-off-100"].coupon.code)
    narrowed = await api.QuoteCheckout(only, metadata=wallet(suite))
    assert narrowed.best_coupon.template == "couponTemplates/ten-off-100"
    assert narrowed.tier_discount_applied is False and narrowed.charge.amount_minor == 19_000
    frozen = await known_member(suite, pb.MEMBER_STATE_FROZEN)
    request.member = f"members/{frozen}"
    await expect_error(
        api.QuoteCheckout(request, metadata=wallet(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="MEMBER_FROZEN",
    )
    request.member = "members/mnobody"
    await expect_error(
        api.QuoteCheckout(request, metadata=wallet(suite)), grpc.StatusCode.NOT_FOUND
    )
    request.member = f"members/{member_id}"
    request.amount.amount_minor = 0
    await expect_error(
        api.QuoteCheckout(request, metadata=wallet(suite)), grpc.StatusCode.INVALID_ARGUMENT
    )


COUPON_REWARDS = """
[[rewards]]
sku = "coupon-10"
name = "¥10 coupon"
points_cost = 100
stock = "unlimited"
min_tier = "basic"
active = true
coupon_template = "reward-ten"
"""


async def test_a_coupon_reward_spends_points_and_issues_the_coupon_at_once(
    suite: Suite, db: asyncpg.Connection, tmp_path: Path
) -> None:
    path = tmp_path / "rewards.toml"
    path.write_text(COUPON_REWARDS, encoding="utf-8")
    await sync_catalogue(db, load_catalogue_file(path, load_rules_file(DEFAULT_RULES_FILE)))
    member_id = await known_member(suite)
    old = NOW - timedelta(days=10)  # past the return window: available at once
    await suite.points.SettlePayment(
        payment(member_id, "earn", 20_000, "retail", occurred=old), metadata=settler(suite)
    )
    request = pb.RedeemRewardRequest(
        member=f"members/{member_id}", sku="coupon-10", request_id="rr-1", quantity=1
    )
    # the template is not there yet: nothing is spent
    await expect_error(
        suite.points.RedeemReward(request, metadata=wallet(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_TEMPLATE_MISSING",
    )
    await created(suite, "reward-ten", template(per_member_limit=1))
    redeemed = await suite.points.RedeemReward(request, metadata=wallet(suite))
    assert redeemed.points == 100 and len(redeemed.coupons) == 1
    (coupon,) = await wallet_of(suite, member_id)
    assert coupon.name == redeemed.coupons[0] and coupon.state == ISSUED
    again = await suite.points.RedeemReward(request, metadata=wallet(suite))
    assert list(again.coupons) == list(redeemed.coupons)  # a repeat: the same coupon
    # the template's limit of one per member refuses a second, and spends nothing
    second = pb.RedeemRewardRequest()
    second.CopyFrom(request)
    second.request_id = "rr-2"
    balance_before = await suite.points.GetBalance(
        pb.GetBalanceRequest(name=f"members/{member_id}/balance"), metadata=wallet(suite)
    )
    await expect_error(
        suite.points.RedeemReward(second, metadata=wallet(suite)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_PER_MEMBER_LIMIT",
    )
    after = await suite.points.GetBalance(
        pb.GetBalanceRequest(name=f"members/{member_id}/balance"), metadata=wallet(suite)
    )
    assert after.available == balance_before.available == 100


async def test_a_coupon_campaign_gives_coupons_through_the_jobs(
    suite: Suite, pool: asyncpg.Pool, db: asyncpg.Connection
) -> None:
    api, who = stub(suite), marketing(suite)

    def coupon_campaign(**budget: ppb.CampaignLimit) -> ppb.Campaign:
        return ppb.Campaign(
            display_name="Coupon day",
            start_time=ts(NOW - timedelta(days=1)),
            end_time=ts(NOW + timedelta(days=2)),
            effect=ppb.CampaignEffect(
                kind=ppb.CampaignEffect.KIND_COUPON, coupon_template="couponTemplates/gift"
            ),
            audience=ppb.CampaignAudience(merchant_ids=["gift-shop"]),
            budget=ppb.CampaignBudget(**budget),
        )

    await expect_error(
        api.CreateCampaign(
            ppb.CreateCampaignRequest(
                campaign_id="bad-gift", campaign=coupon_campaign(total=ppb.CampaignLimit(points=5))
            ),
            metadata=who,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await api.CreateCampaign(
        ppb.CreateCampaignRequest(
            campaign_id="gift-day", campaign=coupon_campaign(total=ppb.CampaignLimit(awards=2))
        ),
        metadata=who,
    )
    await expect_error(
        api.ActivateCampaign(ppb.ActivateCampaignRequest(name="campaigns/gift-day"), metadata=who),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="COUPON_TEMPLATE_MISSING",
    )
    await created(suite, "gift", template(per_member_limit=1))
    await api.ActivateCampaign(ppb.ActivateCampaignRequest(name="campaigns/gift-day"), metadata=who)
    first, second = await known_member(suite), await known_member(suite)
    settled = []
    for member_id, payment_id in ((first, "g-1"), (first, "g-2"), (second, "g-3")):
        request = payment(member_id, payment_id, 1000, "retail")
        request.merchant_id = "gift-shop"
        settled.append(await suite.points.SettlePayment(request, metadata=settler(suite)))
    assert [s.points for s in settled] == [10, 10, 10]  # coupons, not points
    explained = await suite.points.ExplainTransaction(
        pb.ExplainTransactionRequest(name=settled[0].transaction), metadata=suite.auth("officer")
    )
    assert any(s.name == "campaign" and "coupon of gift" in s.note for s in explained.steps)
    await JobRunner(pool).run_once(datetime.now(UTC))
    # the budget of two awards went to the first two payments; the template's limit of one
    # per member refused the second coupon of the first member
    assert len(await wallet_of(suite, first)) == 1
    assert await wallet_of(suite, second) == []
    refused = await db.fetch(
        "SELECT payment_id, refused FROM points.campaign_coupons_due ORDER BY payment_id"
    )
    assert [(r["payment_id"], r["refused"]) for r in refused] == [
        ("g-1", None),
        ("g-2", "COUPON_PER_MEMBER_LIMIT"),
    ]
