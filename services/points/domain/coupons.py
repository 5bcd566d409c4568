"""Coupons, without SQL (docs/decisions/points.md "Coupons"): templates, the coupons issued
from them, their states, and what a coupon takes off a payment.

A template says what its coupons give (an amount off, or a percentage off up to a maximum),
on which payments (minimum spend in its currency, categories, merchants, tiers), for how long
(a fixed window, or N days from issue), how many in all and per member, and whether a coupon
stacks with the tier discount. A coupon is ISSUED to one member, RESERVED for one payment
(by itself released after the hold time), REDEEMED by that payment's settlement, or
EXPIRED or REVOKED. Its code is 128 random bits, shown to its member, and useless without
the member it belongs to (every lookup is by member and code).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

from services.points.domain.promotion_terms import check_places
from services.points.domain.rules import BPS, Rules
from services.points.domain.strict import INT64_MAX
from services.runtime.errors import DomainError, ViolationCollector, failed_precondition

MAX_NAME = 100
MAX_VALID_DAYS = 366
MAX_PER_MEMBER = 1000
CODE_BYTES = 16  # 128 random bits (the issue asks for at least 80)

COUPON_NOT_USABLE = "COUPON_NOT_USABLE"
COUPON_RESERVED = "COUPON_RESERVED"
COUPON_USED = "COUPON_USED"
COUPON_EXPIRED = "COUPON_EXPIRED"
COUPON_REVOKED = "COUPON_REVOKED"
COUPON_OUT_OF_STOCK = "COUPON_OUT_OF_STOCK"
COUPON_PER_MEMBER_LIMIT = "COUPON_PER_MEMBER_LIMIT"
COUPON_TEMPLATE_RETIRED = "COUPON_TEMPLATE_RETIRED"
COUPON_TIER_NOT_ELIGIBLE = "COUPON_TIER_NOT_ELIGIBLE"


class DiscountKind(StrEnum):
    AMOUNT_OFF = "AMOUNT_OFF"
    PERCENT_OFF = "PERCENT_OFF"


class CouponState(StrEnum):
    ISSUED = "ISSUED"
    RESERVED = "RESERVED"
    REDEEMED = "REDEEMED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    kind: DiscountKind
    currency: str
    amount_off_minor: int = 0  # AMOUNT_OFF
    percent_off_bps: int = 0  # PERCENT_OFF, 1..10000
    max_off_minor: int | None = None  # PERCENT_OFF: the most it takes off
    min_spend_minor: int = 0
    categories: tuple[str, ...] = ()
    merchant_ids: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    valid_from: datetime | None = None  # a fixed window [valid_from, valid_until)
    valid_until: datetime | None = None
    valid_days: int | None = None  # or N days from issue
    stock: int | None = None  # coupons in all; None: unlimited
    per_member_limit: int | None = None
    stacks_with_tier_discount: bool = False


@dataclass(frozen=True)
class Template:
    template_id: str
    spec: TemplateSpec
    stock_left: int | None
    active: bool
    created_at: datetime

    def spec_document(self) -> dict[str, Any]:
        return template_document(self.spec)


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def template_document(spec: TemplateSpec) -> dict[str, Any]:
    """The stored form of a template's terms (`template_of` reads it back)."""
    doc = {f.name: getattr(spec, f.name) for f in fields(spec)}
    doc["kind"] = spec.kind.value
    doc["valid_from"], doc["valid_until"] = _when(spec.valid_from), _when(spec.valid_until)
    for name in ("categories", "merchant_ids", "tiers"):
        doc[name] = list(doc[name])
    return doc


def template_of(doc: dict[str, Any]) -> TemplateSpec:
    values = dict(doc)
    values["kind"] = DiscountKind(values["kind"])
    values["valid_from"], values["valid_until"] = _at(doc["valid_from"]), _at(doc["valid_until"])
    for name in ("categories", "merchant_ids", "tiers"):
        values[name] = tuple(values[name])
    return TemplateSpec(**values)


@dataclass(frozen=True)
class Coupon:
    member_id: str
    coupon_id: int
    code: str
    template_id: str
    state: CouponState
    issued_at: datetime
    valid_from: datetime
    expires_at: datetime
    reserved_payment_id: str | None = None
    reserved_until: datetime | None = None
    redeemed_payment_id: str | None = None

    def shown_state(self, now: datetime) -> CouponState:
        """The state as of `now`: a lapse the jobs have not written yet is shown."""
        if self.state is CouponState.ISSUED and now >= self.expires_at:
            return CouponState.EXPIRED
        if (
            self.state is CouponState.RESERVED
            and self.reserved_until
            and now >= self.reserved_until
        ):
            return CouponState.EXPIRED if now >= self.expires_at else CouponState.ISSUED
        return self.state


class MemberStanding(NamedTuple):
    """What coupons and the checkout quote read of a member, under its lock."""

    state: str
    tier_code: str | None  # None: the base tier (no tier row)
    registered_at: datetime


@dataclass(frozen=True)
class Issued:
    """One member's answer of an issue: its coupon (`repeat`: issued by an earlier call
    with the same request id), or why it got none."""

    member_id: str
    coupon: Coupon | None
    error: DomainError | None
    repeat: bool = False


def new_code() -> str:
    """128 random bits in base32 (RFC 4648), upper case, without padding: 26 characters."""
    return base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode().rstrip("=")


def validity(spec: TemplateSpec, issued_at: datetime) -> tuple[datetime, datetime]:
    """[valid_from, expires_at) of a coupon issued at `issued_at`."""
    if spec.valid_days is not None:
        return issued_at, issued_at + timedelta(days=spec.valid_days)
    assert spec.valid_from is not None and spec.valid_until is not None
    return spec.valid_from, spec.valid_until


# ---- checks -------------------------------------------------------------------------------


def check_template(spec: TemplateSpec, rules: Rules, now: datetime, path: str = "template") -> None:
    """Every fault of a template's terms in one INVALID_ARGUMENT."""
    found = ViolationCollector()
    found.text(spec.name, f"{path}.display_name", MAX_NAME)
    if spec.currency not in rules.currencies:
        found.add(f"{path}.currency_code", "not a currency of the program")
    _check_discount(found, spec, path)
    if not 0 <= spec.min_spend_minor <= INT64_MAX:
        found.add(f"{path}.min_spend.amount_minor", "must not be negative")
    _check_validity(found, spec, now, path)
    paths = (f"{path}.tiers", f"{path}.merchant_categories", f"{path}.merchant_ids")
    check_places(found, rules, spec.tiers, spec.categories, spec.merchant_ids, paths)
    for name, value, high in (
        ("stock", spec.stock, INT64_MAX),
        ("per_member_limit", spec.per_member_limit, MAX_PER_MEMBER),
    ):
        if value is not None and not 0 < value <= high:
            found.add(f"{path}.{name}", f"must be within 1..{high}")
    found.raise_if_any()


def _check_discount(found: ViolationCollector, spec: TemplateSpec, path: str) -> None:
    if spec.kind is DiscountKind.AMOUNT_OFF:
        if not 0 < spec.amount_off_minor <= INT64_MAX:
            found.add(f"{path}.amount_off.amount_minor", "must be more than 0")
        return
    if not 0 < spec.percent_off_bps <= BPS:
        found.add(f"{path}.percent_off_bps", f"must be within 1..{BPS} (100 %)")
    if spec.max_off_minor is not None and not 0 < spec.max_off_minor <= INT64_MAX:
        found.add(f"{path}.max_off.amount_minor", "must be more than 0")


def _check_validity(
    found: ViolationCollector, spec: TemplateSpec, now: datetime, path: str
) -> None:
    fixed = spec.valid_from is not None or spec.valid_until is not None
    if fixed == (spec.valid_days is not None):
        found.add(f"{path}.validity", "either a fixed window or a number of days from issue")
        return
    if spec.valid_days is not None:
        if not 0 < spec.valid_days <= MAX_VALID_DAYS:
            found.add(f"{path}.valid_days", f"must be within 1..{MAX_VALID_DAYS}")
        return
    if spec.valid_from is None or spec.valid_until is None:
        found.add(f"{path}.valid_until", "a fixed window needs its start and end")
    elif spec.valid_until <= spec.valid_from:
        found.add(f"{path}.valid_until", "must be after valid_from")
    elif spec.valid_until <= now:
        found.add(f"{path}.valid_until", "the window is in the past")


def refusal_to_reserve(coupon: Coupon, now: datetime) -> DomainError | None:
    """Why this coupon cannot be reserved now (None: it can)."""
    state = coupon.shown_state(now)
    if state is CouponState.ISSUED and now < coupon.valid_from:
        return failed_precondition(COUPON_NOT_USABLE, "the coupon is not valid yet")
    reasons = {
        CouponState.RESERVED: (COUPON_RESERVED, "the coupon is reserved for another payment"),
        CouponState.REDEEMED: (COUPON_USED, "the coupon was used"),
        CouponState.EXPIRED: (COUPON_EXPIRED, "the coupon has expired"),
        CouponState.REVOKED: (COUPON_REVOKED, "the coupon was revoked"),
    }
    if state in reasons:
        return failed_precondition(*reasons[state])
    return None


# ---- what a coupon takes off a payment ------------------------------------------------------


@dataclass(frozen=True)
class Purchase:
    currency: str
    amount_minor: int
    merchant_id: str
    category: str
    tier: str


def applies(spec: TemplateSpec, purchase: Purchase) -> str:
    """ "" when the template's coupons apply to the purchase, else why not (words)."""
    if purchase.currency != spec.currency:
        return f"only for payments in {spec.currency}"
    if purchase.amount_minor < spec.min_spend_minor:
        return f"needs a spend of at least {spec.min_spend_minor} minor units"
    if spec.categories and purchase.category not in spec.categories:
        return "not for this merchant category"
    if spec.merchant_ids and purchase.merchant_id not in spec.merchant_ids:
        return "not for this merchant"
    if spec.tiers and purchase.tier not in spec.tiers:
        return "not for the member's tier"
    return ""


def discount(spec: TemplateSpec, amount_minor: int) -> int:
    """Minor units off `amount_minor`, never more than it: percentages round down."""
    if spec.kind is DiscountKind.AMOUNT_OFF:
        off = spec.amount_off_minor
    else:
        off = amount_minor * spec.percent_off_bps // BPS
        if spec.max_off_minor is not None:
            off = min(off, spec.max_off_minor)
    return max(0, min(off, amount_minor))
