"""Program rules of the points ledger: a versioned document parsed into frozen dataclasses.

Validation is strict because a typo must never silently change how points are earned: unknown
keys, floats and out-of-range values are errors naming the offending path. Rates are exact
Fractions written as strings ("1.5", "3/2") and multipliers are basis points, so no amount
passes through a float (docs/design.md §3). `Rules.document()` has the shape of the TOML file, so
`parse_rules(r.document()) == r` and any stored rule version can be rebuilt from its JSON.
Reading the file is program.py's (`load_rules_file`): this module is pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.points.domain import strict
from services.points.domain.strict import RulesError, parse_rate

BPS = 10_000  # basis points in ×1
MAX_MULTIPLIER_BPS = 100_000
MAX_DAYS = 3660  # bounds keep date arithmetic far from datetime's limits
MAX_MONTHS = 1200


class RefundPolicy(StrEnum):
    """What a refund does with points the member no longer has (services/points/refunds.py)."""

    WITHIN_BALANCE = "within_balance"  # written off
    ALLOW_NEGATIVE = "allow_negative"  # taken below zero, repaid by later earnings


REFUND_POLICIES = tuple(RefundPolicy)
# how late a payment may settle when the rules do not say (max_settlement_delay_days)
DEFAULT_MAX_SETTLEMENT_DELAY_DAYS = 90
# every month has at least this many days: a lot lives longer than 28 x expiry_months days
SHORTEST_MONTH_DAYS = 28


class GrantReason(StrEnum):
    CHECK_IN = "CHECK_IN"
    TASK = "TASK"
    REFERRAL = "REFERRAL"
    GOODWILL = "GOODWILL"


GRANT_REASONS = tuple(GrantReason)

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


class UnknownCurrency(ValueError):
    """A currency the rules give no earn rate for: bad input (INVALID_ARGUMENT), not a fault."""

    def __init__(self, code: str) -> None:
        super().__init__(f"no earn rate for currency {code!r}")
        self.code = code


@dataclass(frozen=True)
class Currency:
    code: str
    minor_units: int
    points_per_unit: Fraction  # points per one major unit (1 CNY)


@dataclass(frozen=True)
class Tier:
    code: str
    name: str
    threshold: int  # qualifying points needed
    earn_multiplier_bps: int
    discount_bps: int
    perks: Mapping[str, str]


@dataclass(frozen=True)
class GrantRule:
    reason: GrantReason
    max_points: int
    admin_above: int | None  # grants above this many points need the admin role


@dataclass(frozen=True)
class Rules:
    currencies: Mapping[str, Currency]
    category_multipliers_bps: Mapping[str, int]  # categories not listed earn at BPS (×1)
    non_earning_categories: frozenset[str]
    cap_per_payment: int | None
    cap_per_member_day: int | None  # per calendar day in `timezone`
    pending_days: int
    expiry_months: int
    timezone: str
    tiers: tuple[Tier, ...]  # ascending thresholds, the first is 0
    qualifying_window_days: int
    downgrade_grace_days: int
    refund_policy: RefundPolicy
    negative_floor: int  # how far `available` may go below 0 under allow_negative
    grants: Mapping[str, GrantRule]  # by GrantReason
    referral_bonus_referrer: int
    referral_bonus_referee: int
    hold_ttl_s: int
    # how many days after `occur_time` a payment may still settle; None: the default
    # (settlement_delay_limit_days). Never more than a lot lives, so no payment settles
    # into points that expired before they were credited.
    max_settlement_delay_days: int | None = None
    # the merchant categories payments may carry, for checking campaigns and coupons that
    # name one; None: not listed (any category code is taken). The categories with a
    # multiplier and the non-earning ones are known whether listed or not.
    merchant_categories: frozenset[str] | None = None

    @property
    def known_categories(self) -> frozenset[str] | None:
        if self.merchant_categories is None:
            return None
        return (
            self.merchant_categories
            | self.non_earning_categories
            | frozenset(self.category_multipliers_bps)
        )

    @property
    def settlement_delay_limit_days(self) -> int:
        if self.max_settlement_delay_days is not None:
            return self.max_settlement_delay_days
        return min(DEFAULT_MAX_SETTLEMENT_DELAY_DAYS, SHORTEST_MONTH_DAYS * self.expiry_months)

    @property
    def available_floor(self) -> int:
        """How far below 0 a member's `available` may go (a balance row's floor)."""
        return -self.negative_floor if self.refund_policy == RefundPolicy.ALLOW_NEGATIVE else 0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances by key

    def currency(self, code: str) -> Currency:
        found = self.currencies.get(code)
        if found is None:
            raise UnknownCurrency(code)
        return found

    def tier(self, code: str) -> Tier:
        found = [tier for tier in self.tiers if tier.code == code]
        if not found:
            raise KeyError(code)
        return found[0]

    def base_tier(self) -> Tier:
        return self.tiers[0]

    def tier_for(self, qualifying_points: int) -> Tier:
        """The highest tier whose threshold the points reach (the base tier below 0 too)."""
        reached = [t for t in self.tiers if t.threshold <= qualifying_points]
        return reached[-1] if reached else self.tiers[0]

    def next_tier(self, code: str) -> Tier | None:
        index = self.tiers.index(self.tier(code))
        return self.tiers[index + 1] if index + 1 < len(self.tiers) else None

    def document(self) -> dict[str, Any]:
        """Canonical JSON-able form, in the shape `parse_rules` reads; None values are left out."""
        return dict(_canonical(self))

    def digest(self) -> str:
        """sha256 of the canonical JSON: equal for equal rules however the file was written."""
        text = json.dumps(
            self.document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fraction_text(value: Fraction) -> str:
    """Always "a/b" (also "1/1"), so the canonical form has one spelling per value."""
    return f"{value.numerator}/{value.denominator}"


def _canonical(value: object) -> Any:
    """JSON form of a rules value; a dataclass stored under its own key leaves that field out."""
    if isinstance(value, Fraction):
        return fraction_text(value)
    if is_dataclass(value) and not isinstance(value, type):
        skip = "code" if isinstance(value, Currency) else "reason"  # Tier keeps code: a list
        items = {f.name: getattr(value, f.name) for f in fields(value) if f.name != skip}
        return {k: _canonical(v) for k, v in items.items() if v is not None}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return [_canonical(v) for v in value]
    return value


# the document's keys are the dataclasses' field names, so the two cannot drift apart
_TOP_KEYS = tuple(f.name for f in fields(Rules))
_CURRENCY_KEYS = tuple(f.name for f in fields(Currency) if f.name != "code")  # code is the key
_TIER_KEYS = tuple(f.name for f in fields(Tier))
_GRANT_KEYS = ("max_points", "admin_above")


def _currencies(doc: Mapping[str, Any]) -> Mapping[str, Currency]:
    table = strict.mapping("currencies", strict.required(doc, "", "currencies"))
    if not table:
        raise RulesError("currencies", "must list at least one currency")
    currencies = {}
    for code, value in table.items():
        path = f"currencies.{code}"
        if not _CURRENCY_CODE.fullmatch(str(code)):
            raise RulesError(path, "currency codes must be 3 upper-case letters (ISO 4217)")
        entry = strict.table(path, value, _CURRENCY_KEYS)
        minor_units = strict.field_int(entry, path, "minor_units", 0, 4)
        rate = parse_rate(
            f"{path}.points_per_unit", strict.required(entry, path, "points_per_unit")
        )
        currencies[code] = Currency(code, minor_units, rate)
    return MappingProxyType(currencies)


def _category_multipliers(doc: Mapping[str, Any]) -> Mapping[str, int]:
    path = "category_multipliers_bps"
    table = strict.mapping(path, doc.get(path, {}))
    multipliers = {}
    for category, bps in table.items():
        strict.code(f"{path}.{category}", category)
        multipliers[category] = strict.int_value(f"{path}.{category}", bps, 0, MAX_MULTIPLIER_BPS)
    return MappingProxyType(dict(sorted(multipliers.items())))


def _non_earning(doc: Mapping[str, Any], multipliers: Mapping[str, int]) -> frozenset[str]:
    path = "non_earning_categories"
    values = doc.get(path, [])
    if not isinstance(values, list | tuple):
        raise RulesError(path, f"must be an array of categories, not {strict.kind(values)}")
    seen: set[str] = set()
    for index, value in enumerate(values):
        category = strict.code(f"{path}[{index}]", value)
        if category in seen:
            raise RulesError(f"{path}[{index}]", f"{category!r} is listed twice")
        if category in multipliers:
            raise RulesError(f"{path}[{index}]", f"{category!r} also has a multiplier")
        seen.add(category)
    return frozenset(seen)


def _tiers(doc: Mapping[str, Any]) -> tuple[Tier, ...]:
    values = strict.required(doc, "", "tiers")
    if not isinstance(values, list | tuple) or not values:
        raise RulesError("tiers", "must be a non-empty array of tables")
    tiers: list[Tier] = []
    for index, value in enumerate(values):
        tier = _tier(f"tiers[{index}]", value)
        if index == 0 and tier.threshold != 0:
            raise RulesError("tiers[0].threshold", "the first tier must start at 0")
        if tiers and tier.threshold <= tiers[-1].threshold:
            raise RulesError(f"tiers[{index}].threshold", "must increase")
        if any(t.code == tier.code for t in tiers):
            raise RulesError(f"tiers[{index}].code", f"{tier.code!r} is used twice")
        tiers.append(tier)
    return tuple(tiers)


def _tier(path: str, value: object) -> Tier:
    entry = strict.table(path, value, _TIER_KEYS)
    return Tier(
        code=strict.code(f"{path}.code", strict.required(entry, path, "code")),
        name=strict.string(f"{path}.name", strict.required(entry, path, "name")),
        threshold=strict.field_int(entry, path, "threshold"),
        earn_multiplier_bps=strict.field_int(
            entry, path, "earn_multiplier_bps", 0, MAX_MULTIPLIER_BPS
        ),
        discount_bps=strict.field_int(entry, path, "discount_bps", 0, BPS),
        perks=_perks(f"{path}.perks", entry.get("perks", {})),
    )


def _perks(path: str, value: object) -> Mapping[str, str]:
    table = strict.mapping(path, value)
    perks = {}
    for name, text in table.items():
        strict.code(f"{path}.{name}", name)
        perks[name] = strict.string(f"{path}.{name}", text)
    return MappingProxyType(dict(sorted(perks.items())))


def _grants(doc: Mapping[str, Any]) -> Mapping[str, GrantRule]:
    table = strict.table("grants", strict.required(doc, "", "grants"), GRANT_REASONS)
    grants: dict[str, GrantRule] = {}
    for reason in GRANT_REASONS:
        path = f"grants.{reason}"
        entry = strict.table(path, strict.required(table, "grants", reason), _GRANT_KEYS)
        max_points = strict.field_int(entry, path, "max_points")
        grants[reason] = GrantRule(
            reason, max_points, strict.optional_int(entry, path, "admin_above")
        )
    return MappingProxyType(grants)


def _timezone(doc: Mapping[str, Any]) -> str:
    name = strict.string("timezone", strict.required(doc, "", "timezone"))
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise RulesError("timezone", f"unknown time zone {name!r}") from None
    return name


def _refund(doc: Mapping[str, Any]) -> tuple[RefundPolicy, int]:
    policy = strict.string("refund_policy", strict.required(doc, "", "refund_policy"))
    if policy not in REFUND_POLICIES:
        raise RulesError("refund_policy", f"must be one of {', '.join(REFUND_POLICIES)}")
    floor = strict.field_int(doc, "", "negative_floor")
    if policy == RefundPolicy.WITHIN_BALANCE and floor != 0:
        raise RulesError("negative_floor", "must be 0 under refund_policy within_balance")
    return RefundPolicy(policy), floor


def _settlement_delay(doc: Mapping[str, Any], expiry_months: int) -> int | None:
    key = "max_settlement_delay_days"
    if doc.get(key) is None:
        return None  # rule versions stored before the rule existed read the same
    return strict.int_value(key, doc[key], 1, SHORTEST_MONTH_DAYS * expiry_months)


def _merchant_categories(doc: Mapping[str, Any]) -> frozenset[str] | None:
    path = "merchant_categories"
    values = doc.get(path)
    if values is None:
        return None  # rule versions stored before the list existed read the same
    if not isinstance(values, list | tuple):
        raise RulesError(path, f"must be an array of categories, not {strict.kind(values)}")
    seen: set[str] = set()
    for index, value in enumerate(values):
        category = strict.code(f"{path}[{index}]", value)
        if category in seen:
            raise RulesError(f"{path}[{index}]", f"{category!r} is listed twice")
        seen.add(category)
    return frozenset(seen)


def parse_rules(doc: Mapping[str, Any]) -> Rules:
    """Validate a rules document (from TOML or stored JSON); RulesError at the first fault."""
    doc = strict.table("", doc, _TOP_KEYS)
    multipliers = _category_multipliers(doc)
    refund_policy, negative_floor = _refund(doc)
    expiry_months = strict.field_int(doc, "", "expiry_months", 1, MAX_MONTHS)
    return Rules(
        currencies=_currencies(doc),
        category_multipliers_bps=multipliers,
        non_earning_categories=_non_earning(doc, multipliers),
        cap_per_payment=strict.optional_int(doc, "", "cap_per_payment", 1),
        cap_per_member_day=strict.optional_int(doc, "", "cap_per_member_day", 1),
        pending_days=strict.field_int(doc, "", "pending_days", 0, MAX_DAYS),
        expiry_months=expiry_months,
        timezone=_timezone(doc),
        tiers=_tiers(doc),
        qualifying_window_days=strict.field_int(doc, "", "qualifying_window_days", 1, MAX_DAYS),
        downgrade_grace_days=strict.field_int(doc, "", "downgrade_grace_days", 0, MAX_DAYS),
        refund_policy=refund_policy,
        negative_floor=negative_floor,
        grants=_grants(doc),
        referral_bonus_referrer=strict.field_int(doc, "", "referral_bonus_referrer"),
        referral_bonus_referee=strict.field_int(doc, "", "referral_bonus_referee"),
        hold_ttl_s=strict.field_int(doc, "", "hold_ttl_s", 1, MAX_DAYS * 86_400),
        max_settlement_delay_days=_settlement_delay(doc, expiry_months),
        merchant_categories=_merchant_categories(doc),
    )


@dataclass(frozen=True)
class RulesInForce:
    """The rules this process applies, and the version the database recorded them as."""

    version: int
    rules: Rules
