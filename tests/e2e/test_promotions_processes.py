"""End to end on the processes `membership run` starts: an operator runs a member day and a
coupon reward (REST, the CLI and gRPC), a member redeems points for the coupon, the checkout
quotes a payment with the tier discount and the coupon, the payment settles with the
campaign's bonus and uses the coupon, a refund gives it back, and the ledger reconciles
with every step explained (issue 15's "done when")."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import timestamp_pb2
from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import points_pb2_grpc as pb_grpc
from membership.points.v1 import promotions_pb2 as ppb
from membership.points.v1 import promotions_pb2_grpc as ppb_grpc

from tests.e2e.test_suite_processes import (
    RPC_TIMEOUT_S,
    Launcher,
    Suite,
    _cli,
    _register,
    _token,
    _wait_all_serving,
    launcher,  # noqa: F401 (a fixture)
    suite_env,  # noqa: F401 (a fixture)
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REWARDS = """
[[rewards]]
sku = "e2e-coupon"
name = "¥20 off"
points_cost = 200
stock = "unlimited"
min_tier = "basic"
active = true
coupon_template = "e2e-twenty"
"""
MEMBER_KNOWN_TIMEOUT_S = 20.0


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _rest(suite: Suite, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = suite.summary["gateway"]["rest"] + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {suite.summary['bootstrap_admin_key']}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as response:
        assert response.status == 200
        return json.loads(response.read())


def _points(
    suite: Suite,
) -> tuple[pb_grpc.PointsServiceStub, ppb_grpc.PromotionsServiceStub, grpc.Channel]:
    channel = grpc.insecure_channel(suite.addr("points"))
    return pb_grpc.PointsServiceStub(channel), ppb_grpc.PromotionsServiceStub(channel), channel


def _settle_when_known(
    points: pb_grpc.PointsServiceStub, suite: Suite, request: pb.SettlePaymentRequest
) -> pb.Settlement:
    """The member reaches points through accounts' outbox a moment after registering."""
    deadline = time.monotonic() + MEMBER_KNOWN_TIMEOUT_S
    while True:
        try:
            settled: pb.Settlement = points.SettlePayment(
                request, metadata=_token(suite, "settlement"), timeout=RPC_TIMEOUT_S
            )
            return settled
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _payment(
    member: str, payment_id: str, amount_minor: int, merchant: str, occurred: datetime
) -> pb.SettlePaymentRequest:
    return pb.SettlePaymentRequest(
        member=member,
        payment_id=payment_id,
        amount=pb.Money(currency_code="CNY", amount_minor=amount_minor),
        merchant_id=merchant,
        merchant_category="dining",
        occur_time=_ts(occurred),
        channel="app",
    )


def test_a_member_day_and_a_coupon_from_reward_to_refund(
    launcher: Launcher,  # noqa: F811 (the fixture)
    suite_env: dict[str, str],  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    rewards = tmp_path / "rewards.toml"
    rewards.write_text(REWARDS, encoding="utf-8")
    suite_env["MEMBERSHIP_POINTS_REWARDS_FILE"] = str(rewards)
    suite = launcher.start(tmp_path / "data", "promotions")
    _wait_all_serving(suite)
    now = datetime.now(UTC)
    today = now.astimezone(ZoneInfo("Asia/Shanghai")).day

    # the operator: a member day through REST, activated with the CLI
    created = _rest(
        suite,
        "POST",
        "/v1/campaigns?campaign_id=e2e-member-day",
        {
            "displayName": "Member day",
            "startTime": (now - timedelta(days=1)).isoformat(),
            "endTime": (now + timedelta(days=2)).isoformat(),
            "schedule": {"daysOfMonth": [today]},
            "audience": {"merchantIds": ["e2e-shop"]},
            "effect": {"kind": "KIND_MULTIPLIER", "multiplierBps": 20000},
        },
    )
    assert created["state"] == "STATE_DRAFT"
    env = {**suite.env, "MEMBERSHIP_KEYS_DIR": str(suite.summary["keys_dir"])}
    activated = subprocess.run(
        _cli("campaigns", "activate", "e2e-member-day", "--addr", suite.addr("points")),
        env=env,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert json.loads(activated.stdout)["state"] == "STATE_ACTIVE"

    points, promotions, channel = _points(suite)
    admin, wallet = _token(suite, "admin"), _token(suite, "wallet-backend")
    with channel:
        promotions.CreateCouponTemplate(
            ppb.CreateCouponTemplateRequest(
                template_id="e2e-twenty",
                template=ppb.CouponTemplate(
                    display_name="¥20 off",
                    kind=ppb.CouponTemplate.KIND_AMOUNT_OFF,
                    currency_code="CNY",
                    amount_off_minor=2000,
                    min_spend_minor=10_000,
                    valid_days=30,
                    stacks_with_tier_discount=True,
                ),
            ),
            metadata=admin,
            timeout=RPC_TIMEOUT_S,
        )
        # the member earns silver (1,000 qualifying points: 1 % off) with an old payment
        member = _register(suite).name
        _settle_when_known(
            points,
            suite,
            _payment(member, "e2e-earn", 50_000, "elsewhere", now - timedelta(days=10)),
        )
        # redeems 200 points for the coupon
        redeemed = points.RedeemReward(
            pb.RedeemRewardRequest(
                member=member, sku="e2e-coupon", request_id=uuid.uuid4().hex, quantity=1
            ),
            metadata=wallet,
            timeout=RPC_TIMEOUT_S,
        )
        (coupon,) = redeemed.coupons
        # the checkout quotes a 300 CNY payment at the shop (REST)
        member_id = member.removeprefix("members/")
        quote = _rest(
            suite,
            "POST",
            f"/v1/members/{member_id}:quoteCheckout",
            {
                "amount": {"currencyCode": "CNY", "amountMinor": "30000"},
                "merchantId": "e2e-shop",
                "merchantCategory": "dining",
                "channel": "app",
            },
        )
        # 1 % of 300 is 3, then ¥20 off: 277 CNY to pay
        assert (quote["tier"], quote["tierDiscountMinor"]) == ("silver", "300")
        assert quote["bestCoupon"]["name"] == coupon
        assert quote["charge"]["amountMinor"] == "27700"
        # it earns 277 x 2 (dining) x 1.25 (silver) = 692, and the member day's 554
        assert (quote["points"], quote["campaignPoints"]) == ("1246", "554")
        promotions.ReserveCoupon(
            ppb.ReserveCouponRequest(name=coupon, payment_id="e2e-pay"),
            metadata=wallet,
            timeout=RPC_TIMEOUT_S,
        )
        settled = _settle_when_known(
            points, suite, _payment(member, "e2e-pay", 27_700, "e2e-shop", now)
        )
        assert settled.points == 1246
        wallet_now = promotions.ListMemberCoupons(
            ppb.ListMemberCouponsRequest(member=member), metadata=wallet, timeout=RPC_TIMEOUT_S
        )
        assert [c.state for c in wallet_now.coupons] == [ppb.Coupon.STATE_REDEEMED]
        explained = points.ExplainTransaction(
            pb.ExplainTransactionRequest(name=settled.transaction),
            metadata=admin,
            timeout=RPC_TIMEOUT_S,
        )
        assert ("campaign", "554") in [(s.name, s.value) for s in explained.steps]
        # a full refund claws back all 1,246 points and gives the coupon back
        refunded = points.RefundPayment(
            pb.RefundPaymentRequest(
                member=member,
                payment_id="e2e-pay",
                refund_id="e2e-refund",
                amount=pb.Money(currency_code="CNY", amount_minor=27_700),
                reason="returned",
            ),
            metadata=_token(suite, "settlement"),
            timeout=RPC_TIMEOUT_S,
        )
        assert refunded.points_clawed_back == 1246
        wallet_now = promotions.ListMemberCoupons(
            ppb.ListMemberCouponsRequest(member=member), metadata=wallet, timeout=RPC_TIMEOUT_S
        )
        assert [c.state for c in wallet_now.coupons] == [ppb.Coupon.STATE_ISSUED]
        report = points.Reconcile(pb.ReconcileRequest(), metadata=admin, timeout=RPC_TIMEOUT_S)
        assert report.ok, report.violations
        campaign = promotions.GetCampaign(
            ppb.GetCampaignRequest(name="campaigns/e2e-member-day"),
            metadata=admin,
            timeout=RPC_TIMEOUT_S,
        )
        assert (campaign.points_given, campaign.awards_given) == (554, 1)
