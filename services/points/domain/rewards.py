"""Rewards, without SQL: the catalogue file (program_rules/rewards.toml), parsed strictly like
the program rules because a typo must never silently change what a reward costs or who may
redeem it (each reward's min_tier must be a tier of the rules in force); the rewards as
stored, who may redeem which, and a redemption's request, result and explanation."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.points.domain.ledger import TransactionKind
from services.points.domain.rules import Rules, Tier
from services.points.domain.spending import LotTaken, SpendingStep
from services.points.domain.strict import INT64_MAX, RulesError
from services.runtime.errors import DomainError, failed_precondition

KIND = TransactionKind.REWARD
REWARD_INACTIVE = "REWARD_INACTIVE"
TIER_TOO_LOW = "TIER_TOO_LOW"
PER_MEMBER_LIMIT = "PER_MEMBER_LIMIT"
OUT_OF_STOCK = "OUT_OF_STOCK"


def out_of_stock() -> DomainError:
    return failed_precondition(OUT_OF_STOCK, "not enough of the reward is left")


SKU = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# costs times the largest quantity stay far inside int64
MAX_POINTS_COST = 10**12
MAX_NAME = 200
_KEYS = (
    "sku",
    "name",
    "points_cost",
    "stock",
    "per_member_limit",
    "min_tier",
    "active",
    "coupon_template",
)


@dataclass(frozen=True)
class CatalogueEntry:
    sku: str
    name: str
    points_cost: int
    stock: int | None  # None = unlimited
    per_member_limit: int | None  # None = no limit
    min_tier: str
    active: bool
    # a reward that is a coupon: redeeming it issues one coupon of this template per unit
    coupon_template: str | None = None


def _int(path: str, value: object, lo: int, hi: int) -> int:
    # bool is an int in Python, but `true` where a number belongs is a mistake
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RulesError(path, f"must be an integer from {lo} to {hi}")
    return value


def _text(path: str, value: object, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME:
        raise RulesError(path, f"must be a non-empty string of at most {MAX_NAME} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise RulesError(path, "must be lower-case letters, digits, _ and - (at most 64)")
    return value


def _entry(path: str, raw: object, tier_codes: set[str]) -> CatalogueEntry:
    if not isinstance(raw, Mapping):
        raise RulesError(path, "must be a table")
    table: Mapping[str, Any] = raw
    for key in table:
        if key not in _KEYS:
            raise RulesError(f"{path}.{key}", "unknown key")
    for key in ("sku", "name", "points_cost", "stock", "min_tier", "active"):
        if key not in table:
            raise RulesError(f"{path}.{key}", "missing")
    stock = table["stock"]
    limit = table.get("per_member_limit")
    min_tier = _text(f"{path}.min_tier", table["min_tier"])
    if min_tier not in tier_codes:
        raise RulesError(f"{path}.min_tier", f"{min_tier!r} is not a tier of the program rules")
    if not isinstance(table["active"], bool):
        raise RulesError(f"{path}.active", "must be true or false")
    return CatalogueEntry(
        sku=_text(f"{path}.sku", table["sku"], SKU),
        name=_text(f"{path}.name", table["name"]),
        points_cost=_int(f"{path}.points_cost", table["points_cost"], 1, MAX_POINTS_COST),
        stock=None if stock == "unlimited" else _int(f"{path}.stock", stock, 0, INT64_MAX),
        per_member_limit=None
        if limit is None
        else _int(f"{path}.per_member_limit", limit, 1, 10**9),
        min_tier=min_tier,
        active=table["active"],
        coupon_template=None
        if table.get("coupon_template") is None
        else _text(f"{path}.coupon_template", table["coupon_template"], SKU),
    )


def parse_catalogue(doc: Mapping[str, Any], rules: Rules) -> tuple[CatalogueEntry, ...]:
    """Validates a catalogue document; RulesError at the first fault."""
    extra = set(doc) - {"rewards"}
    if extra:
        raise RulesError(sorted(extra)[0], "unknown key")
    raw = doc.get("rewards", [])
    if not isinstance(raw, list):
        raise RulesError("rewards", "must be an array of tables")
    codes = {tier.code for tier in rules.tiers}
    entries = tuple(_entry(f"rewards[{i}]", item, codes) for i, item in enumerate(raw))
    skus = [e.sku for e in entries]
    for index, sku in enumerate(skus):
        if sku in skus[:index]:
            raise RulesError(f"rewards[{index}].sku", f"{sku!r} is listed twice")
    return entries


@dataclass(frozen=True)
class Reward:
    sku: str
    name: str
    points_cost: int
    stock: int | None  # units left; None = unlimited
    per_member_limit: int | None
    min_tier: str
    active: bool
    coupon_template: str | None = None  # redeeming issues coupons of this template


@dataclass(frozen=True)
class Availability:
    """Only rewards this member may redeem now: one of these tiers, own limit not reached,
    in stock."""

    member_id: str
    tier_codes: Sequence[str]


def allowed_tiers(rules: Rules, tier: Tier) -> list[str]:
    """Codes of the tiers up to `tier`: a reward with one of these as min_tier is allowed."""
    codes = [t.code for t in rules.tiers]
    return codes[: codes.index(tier.code) + 1] if tier.code in codes else codes[:1]


@dataclass(frozen=True)
class RedeemRewardRequest:
    member_id: str
    sku: str
    request_id: str
    quantity: int

    @property
    def idempotency_key(self) -> str:
        return f"{KIND}:{self.request_id}"

    def fingerprint(self) -> bytes:
        fields = [self.member_id, self.sku, self.request_id, self.quantity]
        return hashlib.sha256(json.dumps(fields).encode()).digest()


@dataclass(frozen=True)
class RewardRedemption:
    member_id: str
    request_id: str
    sku: str
    quantity: int
    points: int
    txn_id: int
    rule_version: int
    lots: tuple[LotTaken, ...]  # spending order
    # the codes of the coupons it issued (a coupon reward), one per unit
    coupons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        lots = [lot.to_json() for lot in self.lots]
        doc = {k: v for k, v in vars(self).items() if k not in ("lots", "coupons")}
        return doc | {"lots": lots, "coupons": list(self.coupons)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RewardRedemption:
        lots = tuple(LotTaken.from_json(lot) for lot in doc["lots"])
        # redemptions stored before coupon rewards have no `coupons`
        return cls(**(doc | {"lots": lots, "coupons": tuple(doc.get("coupons", ()))}))

    def explanation(self, reward: Reward) -> dict[str, Any]:
        steps = [
            {
                "name": SpendingStep.COST,
                "value": str(self.points),
                "note": f"{self.quantity} x {reward.points_cost} points for reward {self.sku}",
            },
        ] + [
            {
                "name": SpendingStep.TAKE,
                "value": str(p),
                "note": f"{p} from lot {i} (expires {at.isoformat()})",
            }
            for i, p, at in self.lots
        ]
        return {
            "kind": KIND,
            "rule_version": self.rule_version,
            "request_id": self.request_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "points_cost": reward.points_cost,
            "points": self.points,
            "steps": steps,
            "sentence": f"Redeemed {self.quantity} x reward {self.sku} for {self.points} points,"
            " soonest-expiring lots first: " + ", ".join(s["note"] for s in steps[1:]) + ".",
        }


@dataclass(frozen=True)
class RewardQuery:
    available_to: str  # member id, or "" for every active reward
    page_size: int
    page_token: str
