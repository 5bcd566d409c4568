"""Protobuf <-> domain of RefundPayment."""

from __future__ import annotations

from membership.points.v1 import points_pb2 as pb

from services.points.domain.refunds import RefundRequest, RefundResult
from services.points.proto_settlement import CURRENCY, MAX_AMOUNT_MINOR
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

MAX_REASON = 200


def refund_of(request: pb.RefundPaymentRequest) -> RefundRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    v.request_id(request.payment_id, "payment_id")
    v.request_id(request.refund_id, "refund_id")
    if not CURRENCY.fullmatch(request.amount.currency_code):
        v.add("amount.currency_code", "required: an ISO-4217 code such as CNY")
    if not 0 < request.amount.amount_minor <= MAX_AMOUNT_MINOR:
        v.add("amount.amount_minor", f"must be between 1 and {MAX_AMOUNT_MINOR}")
    v.text(request.reason, "reason", MAX_REASON, required=False)
    v.raise_if_any()
    return RefundRequest(
        member_id=member_id,
        payment_id=request.payment_id,
        refund_id=request.refund_id,
        currency=request.amount.currency_code,
        amount_minor=request.amount.amount_minor,
        reason=request.reason,
    )


def refund_pb(result: RefundResult) -> pb.Refund:
    member = member_name(result.member_id)
    return pb.Refund(
        name=f"{member}/refunds/{result.refund_id}",
        points_clawed_back=result.points_clawed_back,
        points_uncollectable=result.points_uncollectable,
        refunded_total=pb.Money(
            currency_code=result.currency, amount_minor=result.refunded_total_minor
        ),
        remaining_refundable=pb.Money(
            currency_code=result.currency, amount_minor=result.remaining_minor
        ),
        rule_version=result.rule_version,
        transaction=f"{member}/transactions/{result.txn_id}",
        points_clawed_back_from_holds=result.points_from_holds,
    )
