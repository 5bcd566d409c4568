"""Program rules: the default file, strict validation with paths, canonical form and digest."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.points.domain import tiers
from services.points.domain.rules import GRANT_REASONS, parse_rules
from services.points.domain.strict import RulesError, parse_rate
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE

Doc = dict[str, Any]
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def default_doc() -> Doc:
    """The default file as TOML gives it (a fresh copy each time, to mutate)."""
    return tomllib.loads(DEFAULT_RULES_FILE.read_text(encoding="utf-8"))


def _steps(path: str) -> list[str | int]:
    return [key if key else int(index) for key, index in _STEP.findall(path)]


def _parent(doc: Doc, path: str) -> tuple[Any, str | int]:
    *head, last = _steps(path)
    node: Any = doc
    for step in head:
        node = node[step]
    return node, last


def with_value(path: str, value: object) -> Doc:
    doc = default_doc()
    node, last = _parent(doc, path)
    node[last] = value
    return doc


def without(path: str) -> Doc:
    doc = default_doc()
    node, last = _parent(doc, path)
    del node[last]
    return doc


def fails(doc: object, path: str, problem: str = "") -> RulesError:
    with pytest.raises(RulesError) as caught:
        parse_rules(doc)  # type: ignore[arg-type]
    assert caught.value.path == path, str(caught.value)
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: ")
    return caught.value


# ---- the default file ---------------------------------------------------------------------


def test_default_file_parses_to_the_documented_program() -> None:
    rules = load_rules_file(DEFAULT_RULES_FILE)
    cny = rules.currencies["CNY"]
    assert (cny.code, cny.minor_units, cny.points_per_unit) == ("CNY", 2, Fraction(1))
    assert rules.currencies["USD"].points_per_unit == Fraction(36, 5)
    assert rules.currencies["HKD"].points_per_unit == Fraction(9, 10)
    assert dict(rules.category_multipliers_bps) == {
        "dining": 20000,
        "supermarket": 15000,
        "travel": 30000,
    }
    assert rules.non_earning_categories == {"top_up", "p2p_transfer", "fee"}
    assert (rules.cap_per_payment, rules.cap_per_member_day) == (5000, 20000)
    assert (rules.pending_days, rules.expiry_months, rules.timezone) == (7, 12, "Asia/Shanghai")
    assert (rules.qualifying_window_days, rules.downgrade_grace_days) == (365, 30)
    assert (rules.refund_policy, rules.negative_floor, rules.hold_ttl_s) == (
        "within_balance",
        0,
        900,
    )
    assert (rules.referral_bonus_referrer, rules.referral_bonus_referee) == (200, 100)


def test_default_tiers() -> None:
    rules = load_rules_file(DEFAULT_RULES_FILE)
    summary = [
        (t.code, t.name, t.threshold, t.earn_multiplier_bps, t.discount_bps) for t in rules.tiers
    ]
    assert summary == [
        ("basic", "普通", 0, 10000, 0),
        ("silver", "银卡", 1000, 12500, 100),
        ("gold", "金卡", 5000, 15000, 300),
        ("diamond", "钻石", 20000, 20000, 500),
    ]
    assert rules.tier("diamond").perks["lounge"] == "2/year"
    assert dict(rules.base_tier().perks) == {}


def test_default_grants() -> None:
    grants = load_rules_file(DEFAULT_RULES_FILE).grants
    assert {r: (g.max_points, g.admin_above) for r, g in grants.items()} == {
        "CHECK_IN": (10, None),
        "TASK": (500, None),
        "REFERRAL": (1000, None),
        "GOODWILL": (100000, 1000),
    }
    assert all(grants[r].reason == r for r in GRANT_REASONS)


def test_tier_lookups() -> None:
    rules = load_rules_file(DEFAULT_RULES_FILE)
    assert rules.base_tier().code == "basic"
    assert [rules.tier_for(p).code for p in (-5, 0, 999, 1000, 4999, 5000, 10**9)] == [
        "basic",
        "basic",
        "basic",
        "silver",
        "silver",
        "gold",
        "diamond",
    ]
    assert rules.next_tier("gold") == rules.tier("diamond")
    assert rules.next_tier("diamond") is None
    with pytest.raises(KeyError):
        rules.tier("platinum")


def test_rules_are_immutable() -> None:
    rules = load_rules_file(DEFAULT_RULES_FILE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rules.pending_days = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        rules.category_multipliers_bps["dining"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        rules.tiers[3].perks["lounge"] = "unlimited"  # type: ignore[index]


# ---- canonical form and digest ------------------------------------------------------------


def test_document_round_trips_through_json() -> None:
    rules = load_rules_file(DEFAULT_RULES_FILE)
    stored = json.loads(json.dumps(rules.document()))  # as points.program_rules keeps it
    again = parse_rules(stored)
    assert again == rules
    assert again.digest() == rules.digest()
    assert stored["currencies"]["USD"]["points_per_unit"] == "36/5"


def test_stored_rules_are_parsed_by_document_not_by_version_number() -> None:
    """Version numbers are per database: version 1 of one database is not version 1 of
    another (a job process, or a test run, may meet both)."""
    rules = load_rules_file(DEFAULT_RULES_FILE)
    other = dataclasses.replace(rules, downgrade_grace_days=rules.downgrade_grace_days + 1)
    first = tiers.rules_of(1, json.dumps(rules.document()))
    second = tiers.rules_of(1, json.dumps(other.document()))
    assert first == rules
    assert second.downgrade_grace_days == rules.downgrade_grace_days + 1


def test_digest_is_sha256_hex() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", load_rules_file(DEFAULT_RULES_FILE).digest())


def test_digest_ignores_how_a_rate_is_spelled() -> None:
    rules = parse_rules(with_value("currencies.HKD.points_per_unit", "18/20"))
    assert rules.digest() == load_rules_file(DEFAULT_RULES_FILE).digest()


def test_optional_values_are_left_out_of_the_document() -> None:
    doc = without("cap_per_payment")
    del doc["cap_per_member_day"]
    rules = parse_rules(doc)
    assert rules.cap_per_payment is None and rules.cap_per_member_day is None
    assert "cap_per_payment" not in rules.document()
    assert parse_rules(rules.document()) == rules
    assert rules.digest() != load_rules_file(DEFAULT_RULES_FILE).digest()


def _reordered(value: Any, rng: Any) -> Any:
    """The same document with every table's keys in another order (arrays keep theirs)."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {key: _reordered(value[key], rng) for key in keys}
    if isinstance(value, list):
        return [_reordered(item, rng) for item in value]
    return value


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False))
def test_digest_is_stable_across_key_order(rng: Any) -> None:
    doc = default_doc()
    assert parse_rules(_reordered(doc, rng)).digest() == parse_rules(doc).digest()


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    else:
        yield path, value


def _changed(value: Any) -> Any:
    if isinstance(value, int):
        return value + 1
    if isinstance(value, list):
        return value[:-1]
    if value == "Asia/Shanghai":
        return "Asia/Hong_Kong"
    if value == "within_balance":
        return "allow_negative"
    return "2" if re.fullmatch(r"[\d./]+", value) else value + "x"


def test_digest_changes_with_any_value() -> None:
    base = parse_rules(default_doc()).digest()
    checked = []
    for path, value in _leaves(default_doc()):
        try:
            changed = parse_rules(with_value(path, _changed(value)))
        except RulesError:
            continue  # e.g. tiers[0].threshold must stay 0
        assert changed.digest() != base, path
        checked.append(path)
    assert len(checked) >= 45, checked


# ---- validation: every error names its path -----------------------------------------------

Case = tuple[Callable[[], Doc], str, str]


def _set(path: str, value: object) -> Callable[[], Doc]:
    return lambda: with_value(path, value)


def _drop(path: str) -> Callable[[], Doc]:
    return lambda: without(path)


INVALID: list[Case] = [
    # unknown keys
    (_set("bonus", 1), "bonus", "unknown key"),
    (_set("currencies.CNY.rate", "1"), "currencies.CNY.rate", "unknown key"),
    (_set("tiers[1].colour", "silver"), "tiers[1].colour", "unknown key"),
    (_set("grants.GOODWILL.admin", 5), "grants.GOODWILL.admin", "unknown key"),
    (_set("grants.BIRTHDAY", {"max_points": 5}), "grants.BIRTHDAY", "unknown key"),
    # missing values
    (_drop("pending_days"), "pending_days", "missing"),
    (_drop("tiers[2].threshold"), "tiers[2].threshold", "missing"),
    (_drop("currencies.USD.points_per_unit"), "currencies.USD.points_per_unit", "missing"),
    (_drop("grants.REFERRAL"), "grants.REFERRAL", "missing"),
    (_drop("grants.CHECK_IN.max_points"), "grants.CHECK_IN.max_points", "missing"),
    # wrong types
    (_set("pending_days", "7"), "pending_days", "must be an integer, not a string"),
    (_set("pending_days", 7.0), "pending_days", "must be an integer, not a float"),
    (_set("hold_ttl_s", True), "hold_ttl_s", "not a boolean"),
    (_set("timezone", 8), "timezone", "must be a string"),
    (_set("tiers", {"code": "basic"}), "tiers", "non-empty array"),
    (_set("tiers", []), "tiers", "non-empty array"),
    (_set("tiers[0]", "basic"), "tiers[0]", "must be a table"),
    (_set("currencies.CNY", 1), "currencies.CNY", "must be a table"),
    (_set("currencies", {}), "currencies", "at least one"),
    (_set("non_earning_categories", "fee"), "non_earning_categories", "array"),
    (_set("non_earning_categories[0]", 3), "non_earning_categories[0]", "must be a string"),
    (_set("tiers[3].perks.lounge", 2), "tiers[3].perks.lounge", "must be a string"),
    (_set("tiers[1].name", " "), "tiers[1].name", "must not be empty"),
    # negative numbers
    (_set("pending_days", -1), "pending_days", "must not be negative"),
    (_set("cap_per_payment", -5), "cap_per_payment", ">= 1"),
    (_set("cap_per_member_day", 0), "cap_per_member_day", ">= 1"),
    (_set("tiers[1].discount_bps", -1), "tiers[1].discount_bps", "must not be negative"),
    (_set("grants.TASK.max_points", -1), "grants.TASK.max_points", "must not be negative"),
    (_set("grants.GOODWILL.admin_above", -1), "grants.GOODWILL.admin_above", "negative"),
    (_set("referral_bonus_referrer", -200), "referral_bonus_referrer", "must not be negative"),
    (_set("currencies.CNY.minor_units", -1), "currencies.CNY.minor_units", "negative"),
    (_set("expiry_months", 0), "expiry_months", ">= 1"),
    (_set("hold_ttl_s", 0), "hold_ttl_s", ">= 1"),
    # rates: exact strings only, positive
    (_set("currencies.CNY.points_per_unit", "0"), "currencies.CNY.points_per_unit", "> 0"),
    (_set("currencies.CNY.points_per_unit", "0/5"), "currencies.CNY.points_per_unit", "> 0"),
    (_set("currencies.CNY.points_per_unit", "-1"), "currencies.CNY.points_per_unit", "> 0"),
    (_set("currencies.CNY.points_per_unit", "1/0"), "currencies.CNY.points_per_unit", "denom"),
    (_set("currencies.CNY.points_per_unit", 1.0), "currencies.CNY.points_per_unit", "a float"),
    (_set("currencies.CNY.points_per_unit", 0.5), "currencies.CNY.points_per_unit", "a float"),
    (_set("currencies.CNY.points_per_unit", 1), "currencies.CNY.points_per_unit", "an integer"),
    # multipliers in range
    (_set("category_multipliers_bps.dining", 100001), "category_multipliers_bps.dining", "<="),
    (_set("category_multipliers_bps.dining", -1), "category_multipliers_bps.dining", "negative"),
    (_set("category_multipliers_bps.dining", 1.5), "category_multipliers_bps.dining", "float"),
    (_set("tiers[3].earn_multiplier_bps", 100001), "tiers[3].earn_multiplier_bps", "<="),
    (_set("tiers[3].discount_bps", 10001), "tiers[3].discount_bps", "<= 10000"),
    # tiers
    (_set("tiers[2].threshold", 1000), "tiers[2].threshold", "must increase"),
    (_set("tiers[3].threshold", 4000), "tiers[3].threshold", "must increase"),
    (_set("tiers[0].threshold", 1), "tiers[0].threshold", "start at 0"),
    (_set("tiers[2].code", "silver"), "tiers[2].code", "used twice"),
    (_set("tiers[2].code", "Gold"), "tiers[2].code", "lower-case"),
    # time zone and refund policy
    (_set("timezone", "Mars/Olympus"), "timezone", "unknown time zone"),
    (_set("timezone", "../../etc/passwd"), "timezone", "unknown time zone"),
    (_set("timezone", "Asia"), "timezone", "unknown time zone"),
    (_set("timezone", ""), "timezone", "must not be empty"),
    (_set("refund_policy", "sometimes"), "refund_policy", "within_balance, allow_negative"),
    (_set("negative_floor", 100), "negative_floor", "must be 0 under"),
    # currencies
    (_set("currencies.cny", {"minor_units": 2, "points_per_unit": "1"}), "currencies.cny", "3"),
    (_set("currencies.CN", {"minor_units": 2, "points_per_unit": "1"}), "currencies.CN", "3"),
    (_set("currencies.CNYY", {"minor_units": 2, "points_per_unit": "1"}), "currencies.CNYY", "3"),
    (_set("currencies.CNY.minor_units", 5), "currencies.CNY.minor_units", "<= 4"),
    # categories
    (_set("category_multipliers_bps.Dining", 20000), "category_multipliers_bps.Dining", "lower"),
    (_set("non_earning_categories", ["fee", "fee"]), "non_earning_categories[1]", "twice"),
    (_set("non_earning_categories", ["dining"]), "non_earning_categories[0]", "multiplier"),
]


@pytest.mark.parametrize(("make", "path", "problem"), INVALID, ids=[c[1] for c in INVALID])
def test_invalid_rules_name_the_path(make: Callable[[], Doc], path: str, problem: str) -> None:
    fails(make(), path, problem)


@pytest.mark.parametrize(
    "text", ["1e3", " 1", "1 ", "1.", ".5", "+1", "1_000", "abc", "1/2/3", "0x10", "½", ""]
)
def test_rates_must_be_plain_decimals_or_fractions(text: str) -> None:
    fails(with_value("currencies.CNY.points_per_unit", text), "currencies.CNY.points_per_unit")


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1", Fraction(1)),
        ("0.5", Fraction(1, 2)),
        ("3/2", Fraction(3, 2)),
        ("7.20", Fraction(36, 5)),
    ],
)
def test_rates_are_exact(text: str, rate: Fraction) -> None:
    assert parse_rate("r", text) == rate


def test_document_must_be_a_table() -> None:
    fails([], "(document)", "must be a table")


def test_allow_negative_may_set_a_floor() -> None:
    doc = with_value("refund_policy", "allow_negative")
    doc["negative_floor"] = 500
    rules = parse_rules(doc)
    assert (rules.refund_policy, rules.negative_floor) == ("allow_negative", 500)


def test_a_single_tier_and_no_categories_are_enough() -> None:
    doc = default_doc()
    doc["tiers"] = doc["tiers"][:1]
    del doc["category_multipliers_bps"], doc["non_earning_categories"]
    rules = parse_rules(doc)
    assert rules.tier_for(10**6) == rules.base_tier()
    assert not rules.category_multipliers_bps and not rules.non_earning_categories


def test_load_rules_file_rejects_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("pending_days = = 7\n", encoding="utf-8")
    with pytest.raises(RulesError) as caught:
        load_rules_file(path)
    assert caught.value.path == str(path)
    assert "not valid TOML" in caught.value.problem


def test_load_rules_file_rejects_a_toml_float_rate(tmp_path: Path) -> None:
    text = DEFAULT_RULES_FILE.read_text(encoding="utf-8").replace('"7.2"', "7.2")
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError, match=r"^currencies\.USD\.points_per_unit: .*a float"):
        load_rules_file(path)


def test_errors_are_value_errors() -> None:
    error = fails(with_value("pending_days", -1), "pending_days")
    assert isinstance(error, ValueError)  # callers map ValueError to INVALID_ARGUMENT
    assert (error.path, error.problem) == ("pending_days", "must not be negative")
