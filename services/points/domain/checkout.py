"""QuoteCheckout without SQL (docs/decisions/points.md "The checkout quote"): the tier
discount, what each of the member's coupons would take off, the best combination, and the
amount to charge.

The stacking rules:
- at most one coupon per payment;
- the tier discount (the tier's `discount_bps` of the amount, rounded down) applies unless
  the coupon chosen does not stack with it;
- a coupon that stacks applies to the amount after the tier discount; its minimum spend is
  checked on the amount before any discount;
- the best combination is the one with the largest discount; on a tie, the coupon that
  expires soonest (use what would be lost first), then no coupon at all.
A quote reads only the member's tier and coupons and the payment: never a behaviour tag
(the same thing costs members of one tier the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.points.domain.campaign_awards import CampaignOutcome
from services.points.domain.coupons import (
    Coupon,
    CouponState,
    Purchase,
    TemplateSpec,
    applies,
    discount,
)
from services.points.domain.earning import Earning
from services.points.domain.rules import BPS, Tier


@dataclass(frozen=True)
class CouponOption:
    coupon: Coupon
    spec: TemplateSpec
    discount_minor: int  # what it would take off in the best way to use it
    with_tier: bool  # whether the tier discount applies beside it
    reason: str  # "" when usable on this payment, else why not (words)


@dataclass(frozen=True)
class Quote:
    amount_minor: int
    tier: Tier
    tier_discount_minor: int  # the tier's discount of the whole amount
    options: tuple[CouponOption, ...]
    best: CouponOption | None
    tier_applied: bool
    total_discount_minor: int
    charge_minor: int
    steps: tuple[tuple[str, str, str], ...]  # (name, value, words)


def tier_discount(tier: Tier, amount_minor: int) -> int:
    return amount_minor * tier.discount_bps // BPS


def _option(
    coupon: Coupon, spec: TemplateSpec, purchase: Purchase, tier: Tier, now: datetime
) -> CouponOption:
    reason = ""
    if coupon.shown_state(now) is not CouponState.ISSUED:
        reason = f"the coupon is {coupon.shown_state(now).value.lower()}"
    elif now < coupon.valid_from:
        reason = "the coupon is not valid yet"
    else:
        reason = applies(spec, purchase)
    if reason:
        return CouponOption(coupon, spec, 0, False, reason)
    amount = purchase.amount_minor
    if spec.stacks_with_tier_discount:
        return CouponOption(
            coupon, spec, discount(spec, amount - tier_discount(tier, amount)), True, ""
        )
    return CouponOption(coupon, spec, discount(spec, amount), False, "")


def quote(
    purchase: Purchase,
    tier: Tier,
    coupons: Sequence[tuple[Coupon, TemplateSpec]],
    now: datetime,
) -> Quote:
    amount = purchase.amount_minor
    tier_off = tier_discount(tier, amount)
    options = tuple(_option(c, spec, purchase, tier, now) for c, spec in coupons)
    best: CouponOption | None = None
    best_total = tier_off  # no coupon: the tier discount alone
    usable = sorted(
        (o for o in options if not o.reason), key=lambda o: (o.coupon.expires_at, o.coupon.code)
    )
    for option in usable:
        total = option.discount_minor + (tier_off if option.with_tier else 0)
        if total > best_total:
            best, best_total = option, total
    tier_applied = best is None or best.with_tier
    steps = [("amount", str(amount), f"{amount} minor units")]
    steps.append(
        (
            "tier_discount",
            str(tier_off if tier_applied else 0),
            f"{tier.code}: {tier.discount_bps / 100:g} % off"
            + ("" if tier_applied else " (not with the coupon chosen)"),
        )
    )
    if best is not None:
        steps.append(("coupon", str(best.discount_minor), f"coupon {best.spec.name!r}"))
    charge = amount - best_total
    steps.append(("charge", str(charge), f"{charge} minor units to charge"))
    return Quote(
        amount, tier, tier_off, options, best, tier_applied, best_total, charge, tuple(steps)
    )


@dataclass(frozen=True)
class QuoteRequest:
    member_id: str
    currency: str
    amount_minor: int
    merchant_id: str
    category: str
    channel: str
    codes: tuple[str, ...] = ()  # only these coupons; empty: every usable one


@dataclass(frozen=True)
class CheckoutQuote:
    quote: Quote
    earning: Earning  # on the amount charged, campaigns included
    campaigns: CampaignOutcome
