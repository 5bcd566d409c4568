"""Protobuf <-> domain of PromotionsService's coupons."""

from __future__ import annotations

from datetime import UTC, datetime

from membership.points.v1 import promotions_pb2 as ppb

from services.points.domain.coupons import (
    Coupon,
    CouponState,
    DiscountKind,
    Issued,
    Template,
    TemplateSpec,
)
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name
from services.runtime.paging import decode_token, encode_token
from services.runtime.status import rpc_code_number

TEMPLATE_PREFIX = "couponTemplates/"
MAX_PAGE = 200
KINDS = {
    ppb.CouponTemplate.KIND_AMOUNT_OFF: DiscountKind.AMOUNT_OFF,
    ppb.CouponTemplate.KIND_PERCENT_OFF: DiscountKind.PERCENT_OFF,
}
KINDS_PB = {v: k for k, v in KINDS.items()}
STATES = {
    ppb.Coupon.STATE_ISSUED: CouponState.ISSUED,
    ppb.Coupon.STATE_RESERVED: CouponState.RESERVED,
    ppb.Coupon.STATE_REDEEMED: CouponState.REDEEMED,
    ppb.Coupon.STATE_EXPIRED: CouponState.EXPIRED,
    ppb.Coupon.STATE_REVOKED: CouponState.REVOKED,
}
STATES_PB = {v: k for k, v in STATES.items()}


def template_id_of(name: str) -> str:
    return name[len(TEMPLATE_PREFIX) :] if name.startswith(TEMPLATE_PREFIX) else "/" + name


def _when(message: ppb.CouponTemplate, field: str) -> datetime | None:
    if not message.HasField(field):  # type: ignore[arg-type]
        return None
    value: datetime = getattr(message, field).ToDatetime(tzinfo=UTC)
    return value


def template_spec_of(message: ppb.CouponTemplate) -> TemplateSpec:
    kind = KINDS.get(message.kind)
    if kind is None:
        v = ViolationCollector()
        v.add("template.kind", "required: KIND_AMOUNT_OFF or KIND_PERCENT_OFF")
        v.raise_if_any()
    assert kind is not None
    return TemplateSpec(
        name=message.display_name,
        kind=kind,
        currency=message.currency_code,
        amount_off_minor=message.amount_off_minor,
        percent_off_bps=message.percent_off_bps,
        max_off_minor=message.max_off_minor or None,
        min_spend_minor=message.min_spend_minor,
        categories=tuple(message.merchant_categories),
        merchant_ids=tuple(message.merchant_ids),
        tiers=tuple(message.tiers),
        valid_from=_when(message, "valid_from"),
        valid_until=_when(message, "valid_until"),
        valid_days=message.valid_days or None,
        stock=message.stock or None,
        per_member_limit=message.per_member_limit or None,
        stacks_with_tier_discount=message.stacks_with_tier_discount,
    )


def template_pb(template: Template) -> ppb.CouponTemplate:
    spec = template.spec
    return ppb.CouponTemplate(
        name=TEMPLATE_PREFIX + template.template_id,
        display_name=spec.name,
        kind=KINDS_PB[spec.kind],
        currency_code=spec.currency,
        amount_off_minor=spec.amount_off_minor,
        percent_off_bps=spec.percent_off_bps,
        max_off_minor=spec.max_off_minor or 0,
        min_spend_minor=spec.min_spend_minor,
        merchant_categories=list(spec.categories),
        merchant_ids=list(spec.merchant_ids),
        tiers=list(spec.tiers),
        valid_from=timestamp(spec.valid_from),
        valid_until=timestamp(spec.valid_until),
        valid_days=spec.valid_days or 0,
        stock=spec.stock or 0,
        stock_left=template.stock_left or 0,
        per_member_limit=spec.per_member_limit or 0,
        stacks_with_tier_discount=spec.stacks_with_tier_discount,
        active=template.active,
        create_time=timestamp(template.created_at),
    )


def coupon_name(member_id: str, code: str) -> str:
    return f"{member_name(member_id)}/coupons/{code}"


def coupon_of(name: str, field: str = "name") -> tuple[str, str]:
    """`members/{member_id}/coupons/{code}` -> (member_id, code)."""
    v = ViolationCollector()
    head, sep, code = name.rpartition("/coupons/")
    member_id = member_id_of(v, head, field) if sep else ""
    if not sep or not code or len(code) > 64 or not code.isalnum():
        v.add(field, "must be members/{member_id}/coupons/{code}")
    v.raise_if_any()
    return member_id, code


def coupon_pb(coupon: Coupon, now: datetime) -> ppb.Coupon:
    state = coupon.shown_state(now)
    payment = coupon.redeemed_payment_id or (
        coupon.reserved_payment_id if state is CouponState.RESERVED else None
    )
    return ppb.Coupon(
        name=coupon_name(coupon.member_id, coupon.code),
        code=coupon.code,
        template=TEMPLATE_PREFIX + coupon.template_id,
        state=STATES_PB[state],
        issue_time=timestamp(coupon.issued_at),
        valid_from=timestamp(coupon.valid_from),
        expire_time=timestamp(coupon.expires_at),
        payment_id=payment or "",
        reserve_expire_time=timestamp(coupon.reserved_until)
        if state is CouponState.RESERVED
        else None,
    )


def issue_request_of(request: ppb.IssueCouponsRequest) -> tuple[str, list[str], str]:
    v = ViolationCollector()
    members = [member_id_of(v, name, f"members[{i}]") for i, name in enumerate(request.members)]
    v.request_id(request.request_id)
    v.raise_if_any()
    return template_id_of(request.template), members, request.request_id


def issued_pb(results: list[Issued], now: datetime) -> ppb.IssueCouponsResponse:
    out = []
    for r in results:
        item = ppb.IssueCouponsResponse.Result(member=member_name(r.member_id), repeat=r.repeat)
        if r.coupon is not None:
            item.coupon.CopyFrom(coupon_pb(r.coupon, now))
        if r.error is not None:
            item.error_code = rpc_code_number(r.error)
            item.error_reason = r.error.reason
            item.error_message = r.error.message
        out.append(item)
    return ppb.IssueCouponsResponse(
        results=out,
        issued=sum(1 for r in results if r.coupon is not None and not r.repeat),
        repeated=sum(1 for r in results if r.repeat),
        failed=sum(1 for r in results if r.error is not None),
    )


def page_size_of(requested: int) -> int:
    size = requested or 50
    if not 0 < size <= MAX_PAGE:
        v = ViolationCollector()
        v.add("page_size", f"must be within 1..{MAX_PAGE}")
        v.raise_if_any()
    return size


def wallet_query_of(
    request: ppb.ListMemberCouponsRequest,
) -> tuple[str, list[CouponState], tuple[datetime, int] | None, int]:
    v = ViolationCollector()
    member_id = member_id_of(v, request.member, "member")
    states = []
    for i, state in enumerate(request.states):
        if state not in STATES:
            v.add(f"states[{i}]", "not a coupon state")
        else:
            states.append(STATES[state])
    v.raise_if_any()
    filters = {"member": member_id, "states": sorted(s.value for s in states)}
    position = decode_token(request.page_token, filters)
    after = None
    if position is not None:
        after = (datetime.fromisoformat(str(position["at"])), int(position["id"]))
    return member_id, states, after, page_size_of(request.page_size)


def wallet_token(member_id: str, states: list[CouponState], rows: list[Coupon], size: int) -> str:
    if len(rows) <= size:
        return ""
    last = rows[size - 1]
    filters = {"member": member_id, "states": sorted(s.value for s in states)}
    return encode_token({"at": last.expires_at.isoformat(), "id": last.coupon_id}, filters)
