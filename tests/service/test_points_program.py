"""GetProgram: the program in force, readable by the wallet backend to draw its tier table."""

from __future__ import annotations

import grpc
from membership.points.v1 import points_pb2 as pb

from gateway.server import RunningGateway
from tests.service.test_gateway_rest import call, gateway, new_key
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite

__all__ = ["gateway"]  # the fixture, used by name


async def test_the_wallet_backend_reads_the_program_in_force(suite: Suite) -> None:
    got = await suite.points.GetProgram(
        pb.GetProgramRequest(name="program"), metadata=suite.auth("wallet-backend")
    )
    assert (got.name, got.time_zone) == ("program", "Asia/Shanghai")
    assert got.rule_version >= 1 and got.HasField("rule_effective_time")
    tiers = [(t.code, t.display_name, t.threshold, t.earn_multiplier_bps) for t in got.tiers.tiers]
    assert tiers == [
        ("basic", "普通", 0, 10000),
        ("silver", "银卡", 1000, 12500),
        ("gold", "金卡", 5000, 15000),
        ("diamond", "钻石", 20000, 20000),
    ]
    assert got.tiers.tiers[2].discount_bps == 300
    assert got.tiers.tiers[2].perks["free_withdrawals"] == "3/month"
    assert (got.tiers.qualifying_window_days, got.tiers.downgrade_grace_days) == (365, 30)
    assert not got.tiers.HasField("progress")  # a member's own standing: GetTierProgress
    earning = got.earning
    assert {c.currency_code: c.points_per_unit for c in earning.currencies}["HKD"] == "9/10"
    assert earning.category_multipliers_bps["dining"] == 20000
    assert list(earning.non_earning_categories) == ["fee", "p2p_transfer", "top_up"]
    assert (earning.cap_per_payment, earning.cap_per_member_day) == (5000, 20000)
    assert (earning.pending_days, earning.expiry_months) == (7, 12)
    assert earning.max_settlement_delay_days == 90
    assert earning.tier_multiplier_bps == 0
    assert got.refunds.policy == pb.REFUND_POLICY_WITHIN_BALANCE
    assert got.spending.hold_ttl_seconds == 900
    assert any("return window" in sentence for sentence in got.summary)
    assert any("90 days old is not settled" in sentence for sentence in got.summary)


async def test_the_program_is_named_and_not_for_the_payment_system(suite: Suite) -> None:
    await expect_error(
        suite.points.GetProgram(
            pb.GetProgramRequest(name="programs/x"), metadata=suite.auth("wallet-backend")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"name"},
    )
    await expect_error(
        suite.points.GetProgram(
            pb.GetProgramRequest(name="program"), metadata=suite.auth("settlement")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )


async def test_the_program_through_rest(suite: Suite, gateway: RunningGateway) -> None:
    wallet = await new_key(suite, "wallet-backend")
    status, got, _ = await call(gateway, "GET", "/v1/program", wallet)
    assert status == 200, got
    assert [t["code"] for t in got["tiers"]["tiers"]] == ["basic", "silver", "gold", "diamond"]
    assert got["earning"]["pendingDays"] == 7
