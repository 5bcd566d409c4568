"""Protobuf <-> domain of QuoteCheckout."""

from __future__ import annotations

from datetime import datetime

from membership.points.v1 import points_pb2 as pb
from membership.points.v1 import promotions_pb2 as ppb

from services.points.domain import earning
from services.points.domain.checkout import CheckoutQuote, QuoteRequest
from services.points.proto_coupons import coupon_pb
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of

MAX_CODES = 20


def quote_request_of(request: ppb.QuoteCheckoutRequest) -> QuoteRequest:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    if not request.amount.currency_code:
        v.add("amount.currency_code", "required")
    if request.amount.amount_minor <= 0:
        v.add("amount.amount_minor", "must be more than 0")
    v.require(request.merchant_id, "merchant_id", 64)
    v.require(request.merchant_category, "merchant_category", 64)
    v.bound(request.channel, "channel", 32)
    if len(request.coupons) > MAX_CODES:
        v.add("coupons", f"at most {MAX_CODES} codes")
    v.raise_if_any()
    return QuoteRequest(
        member_id,
        request.amount.currency_code,
        request.amount.amount_minor,
        request.merchant_id,
        request.merchant_category,
        request.channel,
        tuple(request.coupons),
    )


def quote_pb(got: CheckoutQuote, currency: str, now: datetime) -> ppb.CheckoutQuote:
    quote = got.quote
    steps = [pb.ExplanationStep(name=n, value=v, note=w) for n, v, w in quote.steps]
    steps += [
        pb.ExplanationStep(name=s.name, value=s.value, note=s.note) for s in got.earning.steps
    ]
    return ppb.CheckoutQuote(
        amount=pb.Money(currency_code=currency, amount_minor=quote.amount_minor),
        tier=quote.tier.code,
        tier_discount_minor=quote.tier_discount_minor,
        tier_discount_applied=quote.tier_applied,
        offers=[
            ppb.CouponOffer(
                coupon=coupon_pb(o.coupon, now),
                discount_minor=o.discount_minor,
                with_tier_discount=o.with_tier,
                not_usable_because=o.reason,
            )
            for o in quote.options
        ],
        best_coupon=None if quote.best is None else coupon_pb(quote.best.coupon, now),
        total_discount_minor=quote.total_discount_minor,
        charge=pb.Money(currency_code=currency, amount_minor=quote.charge_minor),
        points=got.earning.points,
        campaign_points=got.campaigns.points,
        steps=steps,
        sentence=earning.explain(got.earning),
    )
