"""What campaigns and coupon templates check alike, without SQL: their ids, and the lists of
tiers, merchant categories, merchants and channels they may name."""

from __future__ import annotations

import re
from collections.abc import Sequence

from services.points.domain.rules import Rules
from services.runtime.errors import ViolationCollector

# a campaign's or a coupon template's id: the client's, and its idempotency key
PROMOTION_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
MAX_LIST_ITEMS = 100  # tiers, categories, merchants, channels, days in one list
MAX_ITEM_CHARS = 64


def check_codes(
    found: ViolationCollector,
    values: Sequence[str],
    path: str,
    known: frozenset[str] | set[str] | None,
    unknown: str,
) -> None:
    """A bounded list of distinct printable codes, each `known` when that is given."""
    if len(values) > MAX_LIST_ITEMS:
        found.add(path, f"at most {MAX_LIST_ITEMS} values")
    if len(values) != len(set(values)):
        found.add(path, "lists a value twice")
    for index, value in enumerate(values[:MAX_LIST_ITEMS]):
        if not value or len(value) > MAX_ITEM_CHARS or not value.isprintable():
            found.add(f"{path}[{index}]", f"1..{MAX_ITEM_CHARS} printable characters")
        elif known is not None and value not in known:
            found.add(f"{path}[{index}]", unknown)


def check_places(
    found: ViolationCollector,
    rules: Rules,
    tiers: Sequence[str],
    categories: Sequence[str],
    merchant_ids: Sequence[str],
    paths: tuple[str, str, str],
) -> None:
    """Tiers of the program, categories it knows that earn, merchant ids; `paths`: the
    fields of the three lists."""
    tiers_path, categories_path, merchants_path = paths
    check_codes(
        found, tiers, tiers_path, {t.code for t in rules.tiers}, "not a tier of the program"
    )
    for index, category in enumerate(categories):
        if category in rules.non_earning_categories:
            found.add(f"{categories_path}[{index}]", "a category that never earns points")
    known = rules.known_categories
    check_codes(found, categories, categories_path, known, "not a known category")
    check_codes(found, merchant_ids, merchants_path, None, "")
