"""The rewards catalogue file (program_rules/rewards.toml): parsed strictly, like the program
rules, because a typo must never silently change what a reward costs or who may redeem it.
Each reward's min_tier must be a tier of the rules in force."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.points.rules import INT64_MAX, Rules, RulesError

SKU = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# costs times the largest quantity stay far inside int64
MAX_POINTS_COST = 10**12
MAX_NAME = 200
_KEYS = ("sku", "name", "points_cost", "stock", "per_member_limit", "min_tier", "active")


@dataclass(frozen=True)
class CatalogueEntry:
    sku: str
    name: str
    points_cost: int
    stock: int | None  # None = unlimited
    per_member_limit: int | None  # None = no limit
    min_tier: str
    active: bool


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


def load_catalogue_file(path: Path, rules: Rules) -> tuple[CatalogueEntry, ...]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RulesError(str(path), f"not valid TOML: {error}") from None
    return parse_catalogue(doc, rules)
