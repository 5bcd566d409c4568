"""gRPC <-> domain: PromotionsService's coupon RPCs and QuoteCheckout (a mixin of
server_campaigns's PromotionsServicer)."""

from __future__ import annotations

import grpc
from membership.points.v1 import promotions_pb2 as ppb

from services.points.checkout import Checkout
from services.points.coupons import Coupons
from services.points.proto_checkout import quote_pb, quote_request_of
from services.points.proto_coupons import (
    coupon_of,
    coupon_pb,
    issue_request_of,
    issued_pb,
    page_size_of,
    template_id_of,
    template_pb,
    template_spec_of,
    wallet_query_of,
    wallet_token,
)
from services.runtime.errors import ViolationCollector, bad_field
from services.runtime.paging import decode_token, encode_token


class CouponRpcs:
    coupons: Coupons
    checkout: Checkout

    async def QuoteCheckout(
        self, request: ppb.QuoteCheckoutRequest, context: grpc.aio.ServicerContext
    ) -> ppb.CheckoutQuote:
        asked = quote_request_of(request)
        got = await self.checkout.quote(asked)
        return quote_pb(got, asked.currency, self.coupons.now())

    async def CreateCouponTemplate(
        self, request: ppb.CreateCouponTemplateRequest, context: grpc.aio.ServicerContext
    ) -> ppb.CouponTemplate:
        spec = template_spec_of(request.template)
        return template_pb(await self.coupons.create_template(request.template_id, spec))

    async def GetCouponTemplate(
        self, request: ppb.GetCouponTemplateRequest, context: grpc.aio.ServicerContext
    ) -> ppb.CouponTemplate:
        return template_pb(await self.coupons.get_template(template_id_of(request.name)))

    async def ListCouponTemplates(
        self, request: ppb.ListCouponTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> ppb.ListCouponTemplatesResponse:
        size = page_size_of(request.page_size)
        position = decode_token(request.page_token, {})
        after = "" if position is None else str(position.get("after", ""))
        if position is not None and not after:
            raise bad_field("page_token", "not a page token of this list")
        rows = await self.coupons.list_templates(after, size)
        token = encode_token({"after": rows[size - 1].template_id}, {}) if len(rows) > size else ""
        return ppb.ListCouponTemplatesResponse(
            templates=[template_pb(t) for t in rows[:size]], next_page_token=token
        )

    async def IssueCoupons(
        self, request: ppb.IssueCouponsRequest, context: grpc.aio.ServicerContext
    ) -> ppb.IssueCouponsResponse:
        template_id, members, request_id = issue_request_of(request)
        results = await self.coupons.issue(template_id, members, request_id)
        return issued_pb(results, self.coupons.now())

    async def ListMemberCoupons(
        self, request: ppb.ListMemberCouponsRequest, context: grpc.aio.ServicerContext
    ) -> ppb.ListMemberCouponsResponse:
        member_id, states, after, size = wallet_query_of(request)
        rows = await self.coupons.member_coupons(member_id, states, after, size)
        now = self.coupons.now()
        return ppb.ListMemberCouponsResponse(
            coupons=[coupon_pb(c, now) for c in rows[:size]],
            next_page_token=wallet_token(member_id, states, rows, size),
        )

    async def ReserveCoupon(
        self, request: ppb.ReserveCouponRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Coupon:
        member_id, code = coupon_of(request.name)
        payment_id = _payment_id(request.payment_id)
        coupon = await self.coupons.reserve(member_id, code, payment_id)
        return coupon_pb(coupon, self.coupons.now())

    async def ReleaseCoupon(
        self, request: ppb.ReleaseCouponRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Coupon:
        member_id, code = coupon_of(request.name)
        payment_id = _payment_id(request.payment_id)
        coupon = await self.coupons.release(member_id, code, payment_id)
        return coupon_pb(coupon, self.coupons.now())


class RevokeRpcs:
    coupons: Coupons

    async def RevokeCoupon(
        self, request: ppb.RevokeCouponRequest, context: grpc.aio.ServicerContext
    ) -> ppb.Coupon:
        member_id, code = coupon_of(request.name)
        v = ViolationCollector()
        v.text(request.reason, "reason", 200)
        v.raise_if_any()
        coupon = await self.coupons.revoke(member_id, code)
        return coupon_pb(coupon, self.coupons.now())


def _payment_id(value: str) -> str:
    if not value or len(value) > 128 or not value.isprintable():
        raise bad_field("payment_id", "1..128 printable characters")
    return value
