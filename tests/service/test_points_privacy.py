"""ExportMemberLedger and RestrictMember (internal, for the privacy service): the export holds
everything points has about a member; a restricted ledger is refused for every use but
storage, reconciliation and export, and the refusal writes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import grpc
import pytest
from membership.points.v1 import points_pb2 as pb

from services.runtime.access import METHOD_SCOPES, ROLE_SCOPES
from tests.service.test_points_refunds import refund
from tests.service.test_points_settlement import NOW, known_member, payment, settler, ts
from tests.service.test_points_spending import OLDER, earned, hold, redeem, spender
from tests.support.rpc_errors import expect_error
from tests.support.suite import Metadata, Suite

POINTS = "/membership.points.v1.PointsService/"
RETENTION_END = NOW + timedelta(days=365 * 30)


def privacy(suite: Suite) -> Metadata:
    return suite.auth("service:privacy")


def restrict_request(member_id: str, request_id: str = "dsr-1") -> pb.RestrictMemberRequest:
    return pb.RestrictMemberRequest(
        member=f"members/{member_id}",
        request_id=request_id,
        legal_basis="会计档案管理办法: accounting records kept 30 years",
        retention_end_time=ts(RETENTION_END),
    )


async def restricted(suite: Suite, request: pb.RestrictMemberRequest) -> pb.MemberRestriction:
    got: pb.MemberRestriction = await suite.points.RestrictMember(request, metadata=privacy(suite))
    return got


async def exported(suite: Suite, member_id: str, **fields: object) -> pb.MemberLedgerExport:
    request = pb.ExportMemberLedgerRequest(member=f"members/{member_id}", **fields)  # type: ignore[arg-type]
    got: pb.MemberLedgerExport = await suite.points.ExportMemberLedger(
        request, metadata=privacy(suite)
    )
    return got


async def busy_member(suite: Suite) -> str:
    """Two settlements (one refunded in part), a hold, a points redemption, a reward."""
    member_id = await known_member(suite)
    await earned(suite, member_id, "p-1", 20000, OLDER)
    await earned(suite, member_id, "p-2", 20000, OLDER + timedelta(hours=1))
    await suite.points.RefundPayment(refund(member_id, "p-2", "r-1", 5000), metadata=settler(suite))
    await suite.points.HoldPoints(hold(member_id, "h-1", 5), metadata=spender(suite))
    await suite.points.RedeemPoints(redeem(member_id, "rd-1", 3), metadata=spender(suite))
    await suite.points.RedeemReward(
        pb.RedeemRewardRequest(
            member=f"members/{member_id}", sku="coffee-voucher", request_id="rw-1"
        ),
        metadata=spender(suite),
    )
    return member_id


async def test_the_export_holds_everything_about_the_member(suite: Suite) -> None:
    member_id = await busy_member(suite)
    got = await exported(suite, member_id)
    kinds = sorted(t.transaction.kind for t in got.transactions)
    assert kinds.count("settlement") == 2 and "refund" in kinds, kinds
    assert len(kinds) == 6, kinds  # settlements, refund, hold, redemption, reward
    assert all(t.sentence for t in got.transactions)
    assert all(t.transaction.transfers for t in got.transactions if t.transaction.points)
    refs = {t.transaction.reference.value for t in got.transactions}
    assert {"p-1", "p-2", "r-1", "h-1", "rd-1", "rw-1"} <= refs
    assert len(got.lots) == 2 and {lot.state for lot in got.lots} == {"AVAILABLE"}
    assert [(h.hold_id, h.state, h.points) for h in got.holds] == [("h-1", "HELD", 5)]
    assert [(r.sku, r.units) for r in got.reward_redemptions] == [("coffee-voucher", 1)]
    assert got.balance.held == 5 and got.balance.available > 0
    assert got.next_page_token == "" and not got.HasField("restriction")


async def test_the_export_pages_through_the_transactions(suite: Suite) -> None:
    member_id = await busy_member(suite)
    first = await exported(suite, member_id, page_size=4)
    second = await exported(suite, member_id, page_size=4, page_token=first.next_page_token)
    assert len(first.transactions) == 4 and len(second.transactions) == 2
    assert second.next_page_token == ""
    assert len(first.reward_redemptions) == 1 and len(second.reward_redemptions) == 0
    assert len(first.lots) + len(second.lots) == 2
    names = {t.transaction.name for t in (*first.transactions, *second.transactions)}
    assert len(names) == 6
    await expect_error(
        exported(suite, member_id, page_token="nonsense"), grpc.StatusCode.INVALID_ARGUMENT
    )
    await expect_error(exported(suite, "mnobody"), grpc.StatusCode.NOT_FOUND)


async def test_restrict_is_idempotent(suite: Suite) -> None:
    member_id = await known_member(suite)
    first = await restricted(suite, restrict_request(member_id))
    again = await restricted(suite, restrict_request(member_id))
    assert first == again and first.restrict_time.seconds > 0
    other = restrict_request(member_id, "dsr-2")
    await expect_error(
        restricted(suite, other), grpc.StatusCode.ALREADY_EXISTS, reason="IDEMPOTENCY_KEY_REUSED"
    )
    changed = restrict_request(member_id)
    changed.legal_basis = "another basis"
    await expect_error(
        restricted(suite, changed), grpc.StatusCode.ALREADY_EXISTS, reason="IDEMPOTENCY_KEY_REUSED"
    )
    await expect_error(restricted(suite, restrict_request("mnobody")), grpc.StatusCode.NOT_FOUND)
    missing = restrict_request(member_id)
    missing.ClearField("retention_end_time")
    await expect_error(restricted(suite, missing), grpc.StatusCode.INVALID_ARGUMENT)


async def _snapshot(db: asyncpg.Connection, member_id: str) -> list[object]:
    tables = ("transactions", "transfers", "lots", "holds", "balances", "reward_redemptions")
    got: list[object] = []
    for table in tables:
        rows = await db.fetch(f"SELECT * FROM points.{table} WHERE member_id = $1", member_id)
        got.append(sorted(tuple(str(v) for v in r.values()) for r in rows))
    return got


def blocked_calls(suite: Suite, m: str) -> dict[str, Callable[[], Awaitable[object]]]:
    p, name = suite.points, f"members/{m}"
    s, w, o = settler(suite), spender(suite), suite.auth("officer")
    grant = pb.GrantPointsRequest(
        member=name, request_id="g-1", points=5, reason=pb.GRANT_REASON_CHECK_IN
    )
    reward = pb.RedeemRewardRequest(member=name, sku="coffee-voucher", request_id="rw-2")
    hold_name = f"{name}/holds/h-1"
    return {
        "SettlePayment": lambda: p.SettlePayment(payment(m, "p-new", occurred=NOW), metadata=s),
        "RefundPayment": lambda: p.RefundPayment(refund(m, "p-1", "r-2", 100), metadata=s),
        "GrantPoints": lambda: p.GrantPoints(grant, metadata=suite.auth("admin")),
        "HoldPoints": lambda: p.HoldPoints(hold(m, "h-2", 1), metadata=w),
        "CapturePoints": lambda: p.CapturePoints(
            pb.CapturePointsRequest(name=hold_name, capture_id="c-1", points=1), metadata=w
        ),
        "ReleaseHold": lambda: p.ReleaseHold(
            pb.ReleaseHoldRequest(name=hold_name, request_id="rl-1"), metadata=w
        ),
        "RedeemPoints": lambda: p.RedeemPoints(redeem(m, "rd-2", 1), metadata=w),
        "RedeemReward": lambda: p.RedeemReward(reward, metadata=w),
        "GetBalance": lambda: p.GetBalance(
            pb.GetBalanceRequest(name=f"{name}/balance"), metadata=o
        ),
        "GetTierProgress": lambda: p.GetTierProgress(
            pb.GetTierProgressRequest(name=f"{name}/tierProgress"), metadata=o
        ),
        "ListTransactions": lambda: p.ListTransactions(
            pb.ListTransactionsRequest(parent=name), metadata=o
        ),
        "ExplainTransaction": lambda: p.ExplainTransaction(
            pb.ExplainTransactionRequest(name=f"{name}/transactions/1"), metadata=o
        ),
        "ListRewards": lambda: p.ListRewards(pb.ListRewardsRequest(available_to=name), metadata=o),
    }


async def test_a_restricted_ledger_is_refused_and_nothing_is_written(
    suite: Suite, db: asyncpg.Connection
) -> None:
    member_id = await busy_member(suite)
    before_export = await exported(suite, member_id)
    await restricted(suite, restrict_request(member_id))
    before = await _snapshot(db, member_id)
    for method, call in blocked_calls(suite, member_id).items():
        try:
            await expect_error(
                call(), grpc.StatusCode.FAILED_PRECONDITION, reason="MEMBER_RESTRICTED"
            )
        except AssertionError as exc:
            raise AssertionError(method) from exc
    batch = await suite.points.SettlePayments(
        pb.SettlePaymentsRequest(requests=[payment(member_id, "p-batch", occurred=NOW)]),
        metadata=settler(suite),
    )
    assert batch.results[0].error_reason == "MEMBER_RESTRICTED", batch
    assert await _snapshot(db, member_id) == before
    # repeats of what was done before still answer with their first result
    again = await suite.points.SettlePayment(
        payment(member_id, "p-1", 20000, occurred=OLDER), metadata=settler(suite)
    )
    assert again.points > 0
    # storage, reconciliation and export still work
    after_export = await exported(suite, member_id)
    assert list(after_export.transactions) == list(before_export.transactions)
    assert after_export.restriction.request_id == "dsr-1"
    report = await suite.points.Reconcile(
        pb.ReconcileRequest(member=f"members/{member_id}"), metadata=suite.auth("admin")
    )
    assert report.ok, report


@pytest.mark.parametrize("method", ["ExportMemberLedger", "RestrictMember"])
def test_only_the_privacy_service_may_call(method: str) -> None:
    scope = METHOD_SCOPES[POINTS + method]
    assert {role for role, scopes in ROLE_SCOPES.items() if scope in scopes} == {"service:privacy"}


async def test_others_are_refused(suite: Suite) -> None:
    member_id = await known_member(suite)
    for role in ("wallet-backend", "officer", "admin", "settlement", "service:accounts"):
        await expect_error(
            suite.points.RestrictMember(restrict_request(member_id), metadata=suite.auth(role)),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        await expect_error(
            suite.points.ExportMemberLedger(
                pb.ExportMemberLedgerRequest(member=f"members/{member_id}"),
                metadata=suite.auth(role),
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
