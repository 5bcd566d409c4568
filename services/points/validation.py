"""Request validation for points: every violation at once, never INTERNAL."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from membership.points.v1 import points_pb2 as pb

from services.points.settlement import Payment
from services.runtime.errors import DomainError, ViolationCollector
from services.runtime.names import member_id_of

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


def batch_size(v: ViolationCollector, size: int) -> None:
    if not 1 <= size <= MAX_BATCH:
        v.add("requests", f"between 1 and {MAX_BATCH} payments")
