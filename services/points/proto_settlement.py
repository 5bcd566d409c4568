"""Protobuf <-> domain of SettlePayment and SettlePayments: the payments, validated (every
violation at once, never INTERNAL), and the settlements and per-item errors answered."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf import duration_pb2
from membership.points.v1 import points_pb2 as pb

from services.points.domain.settlement import (
    ItemOutcome,
    Payment,
    PointsState,
    SettlementResult,
)
from services.points.proto import timestamp
from services.runtime.errors import DomainError, ViolationCollector
from services.runtime.names import member_id_of, member_name
from services.runtime.status import rpc_code_number

MAX_AMOUNT_MINOR = 10**15  # far above any wallet payment; keeps every product within int64
MAX_BATCH = 500
MAX_CLOCK_SKEW = timedelta(minutes=5)
CURRENCY = re.compile(r"[A-Z]{3}")
CATEGORY = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_MERCHANT_ID = 64
MAX_CHANNEL = 32


def _occurred_at(
    v: ViolationCollector, request: pb.SettlePaymentRequest, now: datetime, max_delay_days: int
) -> datetime:
    """Not in the future, and not older than the rules let a payment settle: points of a
    payment that old would be credited already expired (and before the program time zone's
    history, a date would carry a local-mean-time offset)."""
    if not request.HasField("occur_time"):
        v.add("occur_time", "required")
        return now
    occurred = request.occur_time.ToDatetime(tzinfo=UTC)
    if occurred > now + MAX_CLOCK_SKEW:
        v.add("occur_time", "must not be in the future")
    elif occurred < now - timedelta(days=max_delay_days):
        v.add(
            "occur_time",
            f"more than {max_delay_days} days ago: too late to settle"
            " (program rule max_settlement_delay_days)",
        )
    return occurred


def _amount(v: ViolationCollector, request: pb.SettlePaymentRequest) -> None:
    if not CURRENCY.fullmatch(request.amount.currency_code):
        v.add("amount.currency_code", "required: an ISO-4217 code such as CNY")
    if not 0 < request.amount.amount_minor <= MAX_AMOUNT_MINOR:
        v.add("amount.amount_minor", f"must be between 1 and {MAX_AMOUNT_MINOR}")


def payment_of(request: pb.SettlePaymentRequest, now: datetime, max_delay_days: int) -> Payment:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.payment_id, "payment_id")
    _amount(v, request)
    v.text(request.merchant_id, "merchant_id", MAX_MERCHANT_ID)
    if not CATEGORY.fullmatch(request.merchant_category):
        v.add("merchant_category", "required: a lower-case category code")
    v.text(request.channel, "channel", MAX_CHANNEL, required=False)
    occurred_at = _occurred_at(v, request, now, max_delay_days)
    v.raise_if_any()
    return Payment(
        member_id=member_id,
        payment_id=request.payment_id,
        currency=request.amount.currency_code,
        amount_minor=request.amount.amount_minor,
        merchant_id=request.merchant_id,
        category=request.merchant_category,
        occurred_at=occurred_at,
        channel=request.channel,
    )


def payment_or_error(
    request: pb.SettlePaymentRequest, now: datetime, max_delay_days: int
) -> Payment | DomainError:
    try:
        return payment_of(request, now, max_delay_days)
    except DomainError as err:
        return err


def payments_of(
    request: pb.SettlePaymentsRequest, now: datetime, max_delay_days: int
) -> list[Payment | DomainError]:
    """Each payment of the batch, or the error that item alone has; INVALID_ARGUMENT for a
    batch of the wrong size."""
    v = ViolationCollector()
    if not 1 <= len(request.requests) <= MAX_BATCH:
        v.add("requests", f"between 1 and {MAX_BATCH} payments")
    v.raise_if_any()
    return [payment_or_error(r, now, max_delay_days) for r in request.requests]


STATE_TO_PB = {
    PointsState.PENDING: pb.POINTS_STATE_PENDING,
    PointsState.AVAILABLE: pb.POINTS_STATE_AVAILABLE,
    PointsState.NONE: pb.POINTS_STATE_NONE,
}


def settlement_pb(result: SettlementResult) -> pb.Settlement:
    member = member_name(result.member_id)
    return pb.Settlement(
        name=f"{member}/settlements/{result.payment_id}",
        points=result.points,
        state=STATE_TO_PB[result.state],
        available_time=timestamp(result.available_at),
        expire_time=timestamp(result.expires_at),
        tier_multiplier_bps=result.tier_multiplier_bps,
        rule_version=result.rule_version,
        transaction=(
            f"{member}/transactions/{result.txn_id}"
            if result.points > 0 and result.txn_id is not None
            else ""
        ),
    )


def outcome_pb(outcome: ItemOutcome | DomainError) -> pb.SettlePaymentResult:
    if isinstance(outcome, ItemOutcome) and outcome.result is not None:
        return pb.SettlePaymentResult(settlement=settlement_pb(outcome.result))
    error = outcome if isinstance(outcome, DomainError) else outcome.error
    if error is None:
        raise DomainError.internal("a batch item has neither a result nor an error")
    retry_delay = None
    if error.retry_after_s is not None:
        retry_delay = duration_pb2.Duration()
        retry_delay.FromNanoseconds(int(error.retry_after_s * 1e9))
    return pb.SettlePaymentResult(
        error_code=rpc_code_number(error),
        error_reason=error.reason,
        error_message=error.message,
        retry_delay=retry_delay,
    )


def results_pb(
    parsed: Sequence[Payment | DomainError], outcomes: Sequence[ItemOutcome]
) -> pb.SettlePaymentsResponse:
    """The answer of each request, in order: its parse error, or its settlement's outcome
    (`outcomes` are those of the payments that parsed, in order)."""
    settled = iter(outcomes)
    results = [p if isinstance(p, DomainError) else next(settled) for p in parsed]
    return pb.SettlePaymentsResponse(results=[outcome_pb(r) for r in results])
