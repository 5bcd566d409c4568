"""GrantPoints: reasons, caps, the admin threshold, idempotency, bad input."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
from membership.points.v1 import points_pb2 as pb

from tests.service.test_points_settlement import NOW, balance, known_member, ledger_holds, ts
from tests.support.rpc_errors import expect_error
from tests.support.suite import Suite


def grant(
    member_id: str,
    request_id: str,
    points: int,
    reason: pb.GrantReason.ValueType = pb.GRANT_REASON_CHECK_IN,
    **extra: object,
) -> pb.GrantPointsRequest:
    return pb.GrantPointsRequest(
        member=f"members/{member_id}",
        request_id=request_id,
        points=points,
        reason=reason,
        **extra,  # type: ignore[arg-type]
    )


async def test_a_check_in_grant_is_available_at_once(suite: Suite) -> None:
    member_id = await known_member(suite)
    got = await suite.points.GrantPoints(
        grant(member_id, "g-1", 10), metadata=suite.auth("wallet-backend")
    )
    assert (got.points, got.reason, got.debt_repaid) == (10, pb.GRANT_REASON_CHECK_IN, 0)
    assert got.name == f"members/{member_id}/grants/g-1"
    assert got.expire_time.ToDatetime(tzinfo=UTC) > NOW + timedelta(days=300)
    now = await balance(suite, member_id)
    assert (now.available, now.pending, now.lifetime_earned) == (10, 0, 10)
    again = await suite.points.GrantPoints(
        grant(member_id, "g-1", 10), metadata=suite.auth("wallet-backend")
    )
    assert again == got
    await expect_error(
        suite.points.GrantPoints(grant(member_id, "g-1", 9), metadata=suite.auth("wallet-backend")),
        grpc.StatusCode.ALREADY_EXISTS,
        reason="IDEMPOTENCY_KEY_REUSED",
    )
    assert (await balance(suite, member_id)).available == 10
    await ledger_holds(suite.dsn)


async def test_caps_per_reason_and_the_admin_threshold(suite: Suite) -> None:
    member_id = await known_member(suite)
    wallet, admin = suite.auth("wallet-backend"), suite.auth("admin")
    await expect_error(
        suite.points.GrantPoints(grant(member_id, "c-1", 11), metadata=wallet),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"points"},
    )
    goodwill = pb.GRANT_REASON_GOODWILL
    await suite.points.GrantPoints(grant(member_id, "gw-1", 1000, goodwill), metadata=wallet)
    await expect_error(
        suite.points.GrantPoints(grant(member_id, "gw-2", 1001, goodwill), metadata=wallet),
        grpc.StatusCode.PERMISSION_DENIED,
        reason="GRANT_NEEDS_ADMIN",
    )
    await suite.points.GrantPoints(grant(member_id, "gw-3", 50_000, goodwill), metadata=admin)
    await expect_error(
        suite.points.GrantPoints(grant(member_id, "gw-4", 100_001, goodwill), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"points"},
    )
    assert (await balance(suite, member_id)).available == 51_000
    await ledger_holds(suite.dsn)
    report = await suite.points.Reconcile(
        pb.ReconcileRequest(member=f"members/{member_id}"), metadata=admin
    )
    assert (report.ok, report.total_violations, report.checked.transactions) == (True, 0, 2)


async def test_an_explicit_expiry_is_kept_and_must_be_in_the_future(suite: Suite) -> None:
    member_id = await known_member(suite)
    wallet = suite.auth("wallet-backend")
    when = NOW + timedelta(days=3)
    got = await suite.points.GrantPoints(
        grant(member_id, "t-1", 100, pb.GRANT_REASON_TASK, expire_time=ts(when)), metadata=wallet
    )
    assert abs(got.expire_time.ToDatetime(tzinfo=UTC) - when) < timedelta(milliseconds=1)
    assert [e.points for e in (await balance(suite, member_id)).expiring] == [100]
    await expect_error(
        suite.points.GrantPoints(
            grant(member_id, "t-2", 100, pb.GRANT_REASON_TASK, expire_time=ts(NOW - timedelta(1))),
            metadata=wallet,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        fields={"expire_time"},
    )


async def test_bad_grants_are_clear_errors_and_write_nothing(suite: Suite) -> None:
    member_id = await known_member(suite)
    frozen = await known_member(suite, pb.MEMBER_STATE_FROZEN)
    wallet = suite.auth("wallet-backend")
    cases = [
        (grant(member_id, "b-1", 0), grpc.StatusCode.INVALID_ARGUMENT, None, {"points"}),
        (
            grant(member_id, "b-2", 5, pb.GRANT_REASON_UNSPECIFIED),
            grpc.StatusCode.INVALID_ARGUMENT,
            None,
            {"reason"},
        ),
        (grant(member_id, "", 5), grpc.StatusCode.INVALID_ARGUMENT, None, {"request_id"}),
        (grant("x/y", "b-3", 5), grpc.StatusCode.INVALID_ARGUMENT, None, {"member"}),
        (grant(frozen, "b-4", 5), grpc.StatusCode.FAILED_PRECONDITION, "MEMBER_FROZEN", None),
        (grant("mnobody", "b-5", 5), grpc.StatusCode.UNAVAILABLE, "MEMBER_UNKNOWN", None),
    ]
    for request, code, reason, fields in cases:
        await expect_error(
            suite.points.GrantPoints(request, metadata=wallet), code, reason=reason, fields=fields
        )
    assert (await balance(suite, member_id)).lifetime_earned == 0
    await ledger_holds(suite.dsn)
