"""Protobuf <-> domain of GetBalance."""

from __future__ import annotations

from collections.abc import Sequence

from membership.points.v1 import points_pb2 as pb

from services.points.domain.balance import Balance, ExpiringPoints
from services.points.domain.coupons import Coupon
from services.points.proto import timestamp
from services.runtime.errors import ViolationCollector
from services.runtime.names import member_id_of, member_name

SUFFIX = "/balance"


def member_of(request: pb.GetBalanceRequest) -> str:
    v = ViolationCollector()
    member_id = member_id_of(v, request.name, "name", SUFFIX)
    v.raise_if_any()
    return member_id


def balance_pb(
    name: str, row: Balance, expiring: Sequence[ExpiringPoints], coupons: Sequence[Coupon] = ()
) -> pb.Balance:
    return pb.Balance(
        name=name,
        available=row.available,
        pending=row.pending,
        held=row.held,
        lifetime_earned=row.lifetime_earned,
        expiring=[
            pb.ExpiringPoints(points=e.points, expire_time=timestamp(e.expires_at))
            for e in expiring
        ],
        expiring_coupons=[
            pb.ExpiringCoupon(
                coupon=f"{member_name(c.member_id)}/coupons/{c.code}",
                template=f"couponTemplates/{c.template_id}",
                expire_time=timestamp(c.expires_at),
            )
            for c in coupons
        ],
    )
