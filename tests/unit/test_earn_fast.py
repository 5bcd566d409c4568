"""The fast `compute_earning` and `show` give byte-identical results to the Fraction-based
implementation they replaced, which is kept below verbatim (only renamed) as the reference."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction
from types import MappingProxyType

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.points.domain import earning as earn
from services.points.domain.earning import (
    BELOW_ONE_POINT,
    DAILY_CAP_REACHED,
    NON_EARNING_CATEGORY,
    ZERO_MULTIPLIER,
    Earning,
    Step,
    compute_earning,
)
from services.points.domain.rules import (
    BPS,
    MAX_MULTIPLIER_BPS,
    Currency,
    Rules,
    UnknownCurrency,
    fraction_text,
)
from services.points.domain.strict import INT64_MAX
from services.points.program import load_rules_file
from services.points.settings import DEFAULT_RULES_FILE

RULES = load_rules_file(DEFAULT_RULES_FILE)
_SHOWN_DECIMALS = 4

# ---- reference: services/points/earn.py before the integer rewrite, verbatim but renamed ----


def _reference_compute_earning(
    rules: Rules,
    currency_code: str,
    amount_minor: int,
    category: str,
    tier_multiplier_bps: int,
    earned_today: int,
) -> Earning:
    """Points for one payment; `earned_today` is what the daily cap has already counted today."""
    currency = rules.currency(currency_code)
    _reference_check_inputs(amount_minor, tier_multiplier_bps, earned_today)
    amount = Fraction(amount_minor, 10**currency.minor_units)
    exact = amount * currency.points_per_unit
    money = f"{_reference_decimal(amount, currency.minor_units)} {currency_code}"
    rate = f"{_reference_points(currency.points_per_unit)} per 1 {currency_code}"
    steps = [Step("base", fraction_text(exact), f"{money} at {rate} is {_reference_show(exact)}")]
    if category in rules.non_earning_categories:
        steps.append(Step("category", "0", f"{category} payments never earn points"))
        return Earning(0, tuple(steps), NON_EARNING_CATEGORY)
    exact = _reference_multiply(rules, exact, category, tier_multiplier_bps, steps)
    points = math.floor(exact)  # the one rounding of the computation
    steps.append(Step("round_down", str(points), f"rounded down to {points}"))
    points = _reference_cap_per_payment(rules, points, steps)
    points = _reference_cap_per_day(rules, points, earned_today, steps)
    if points > INT64_MAX:
        raise ValueError("amount_minor: earns more points than an int64 holds")
    return Earning(points, tuple(steps), _reference_none_reason(exact, points))


def _reference_check_inputs(amount_minor: int, tier_multiplier_bps: int, earned_today: int) -> None:
    if not 0 < amount_minor <= INT64_MAX:
        raise ValueError("amount_minor: must be > 0 and fit in an int64")
    if not 0 <= tier_multiplier_bps <= MAX_MULTIPLIER_BPS:
        raise ValueError(f"tier_multiplier_bps: must be within 0..{MAX_MULTIPLIER_BPS}")
    if earned_today < 0:
        raise ValueError("earned_today: must not be negative")


def _reference_multiply(
    rules: Rules, exact: Fraction, category: str, tier_bps: int, steps: list[Step]
) -> Fraction:
    category_bps = rules.category_multipliers_bps.get(category, BPS)
    listed = category in rules.category_multipliers_bps
    exact *= Fraction(category_bps, BPS)
    what = f"for {category}" if listed else f"for {category} (not a bonus category)"
    steps.append(
        Step(
            "category",
            fraction_text(exact),
            f"{_reference_times(category_bps)} {what} is {_reference_show(exact)}",
        )
    )
    exact *= Fraction(tier_bps, BPS)
    steps.append(
        Step(
            "tier",
            fraction_text(exact),
            f"{_reference_times(tier_bps)} for the tier is {_reference_show(exact)}",
        )
    )
    return exact


def _reference_times(bps: int) -> str:
    return f"×{_reference_show(Fraction(bps, BPS))}"


def _reference_cap_per_payment(rules: Rules, points: int, steps: list[Step]) -> int:
    cap = rules.cap_per_payment
    if cap is None:
        note = "no cap per payment"
    elif points > cap:
        points, note = cap, f"capped at {cap} per payment"
    else:
        note = f"within the cap of {cap} per payment"
    steps.append(Step("cap_per_payment", str(points), note))
    return points


def _reference_cap_per_day(rules: Rules, points: int, earned_today: int, steps: list[Step]) -> int:
    cap = rules.cap_per_member_day
    if cap is None:
        note = "no daily cap"
    else:
        # earned_today may exceed a cap that was lowered during the day: nothing is left then
        left = max(0, cap - earned_today)
        if points > left:
            points, note = left, f"limited to the {left} left of the daily cap of {cap}"
        else:
            note = f"within the daily cap of {cap} ({left} left today)"
    steps.append(Step("cap_per_member_day", str(points), note))
    return points


def _reference_none_reason(exact: Fraction, points: int) -> str:
    if points > 0:
        return ""
    if exact == 0:
        return ZERO_MULTIPLIER
    return BELOW_ONE_POINT if exact < 1 else DAILY_CAP_REACHED  # caps per payment are >= 1


def _reference_points(value: Fraction) -> str:
    return f"{_reference_show(value)} point{'' if value == 1 else 's'}"


def _reference_show(value: Fraction) -> str:
    """An exact decimal ("12.34") when there is one, else "37/3 (about 12.3333)"."""
    rest, twos, fives = value.denominator, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:  # a repeating decimal: show it exactly as a fraction, and roughly
        return f"{fraction_text(value)} (about {_reference_decimal(value, _SHOWN_DECIMALS)})"
    return _reference_decimal(value, max(twos, fives))


def _reference_decimal(value: Fraction, places: int) -> str:
    scaled = math.floor(abs(value) * 10**places)
    digits = str(scaled).rjust(places + 1, "0")
    sign = "-" if value < 0 else ""
    return (
        f"{sign}{digits[: len(digits) - places]}.{digits[-places:]}"
        if places
        else f"{sign}{digits}"
    )


# ---- rules to compare on ------------------------------------------------------------------


def with_currencies(rules: Rules, *currencies: Currency) -> Rules:
    return dataclasses.replace(rules, currencies=MappingProxyType({c.code: c for c in currencies}))


THIRDS = with_currencies(
    dataclasses.replace(RULES, cap_per_payment=None, cap_per_member_day=None),
    Currency("CNY", 2, Fraction(1, 3)),
    Currency("JPY", 0, Fraction(2, 3)),
    Currency("KWD", 3, Fraction(7, 9)),
    Currency("XAU", 4, Fraction(22, 7)),
)
ODD_MULTIPLIERS = dataclasses.replace(
    RULES,
    category_multipliers_bps=MappingProxyType(
        {"dining": 3333, "odd": 1, "zero": 0, "max": 100_000}
    ),
    cap_per_payment=1,
)
RULE_SETS = [
    RULES,
    dataclasses.replace(RULES, cap_per_payment=None, cap_per_member_day=None),
    dataclasses.replace(RULES, cap_per_payment=None),
    dataclasses.replace(RULES, cap_per_member_day=None),
    THIRDS,
    ODD_MULTIPLIERS,
]
EARNING = ["books", "groceries"]  # not listed: ×1
BONUS = ["dining", "supermarket", "travel", "odd", "zero", "max"]  # listed in some rule sets
NON_EARNING = sorted(RULES.non_earning_categories)
UNKNOWN = ["", "no_such_category", "ünïcode", "Dining"]
CATEGORIES = st.sampled_from(EARNING + BONUS + NON_EARNING + UNKNOWN) | st.text(max_size=6)
DAILY_CAP = 20_000
RATE_PART = st.integers(1, 10**6) | st.sampled_from([1, 2, 3, 7, 10**18])


@st.composite
def any_rates(draw: st.DrawFn) -> Rules:
    """Default rules with one random exact rate per currency and random caps."""
    currencies = [
        Currency(code, draw(st.integers(0, 4)), Fraction(draw(RATE_PART), draw(RATE_PART)))
        for code in sorted(RULES.currencies)
    ]
    caps = st.none() | st.integers(1, 100_000)
    rules = dataclasses.replace(RULES, cap_per_payment=draw(caps), cap_per_member_day=draw(caps))
    return with_currencies(rules, *currencies)


AMOUNTS = st.integers(1, 10**15) | st.sampled_from(
    [1, 2, 9, 99, 100, 101, 10**15, INT64_MAX, INT64_MAX + 1, 2**64, 0, -1]
)
TIER_BPS = st.integers(0, MAX_MULTIPLIER_BPS) | st.sampled_from(
    [0, 1, 3333, BPS, 12_500, 15_000, 20_000, MAX_MULTIPLIER_BPS, -1, MAX_MULTIPLIER_BPS + 1]
)
EARNED_TODAY = st.integers(0, DAILY_CAP + 1000) | st.sampled_from([DAILY_CAP, 10**12, -1])
CURRENCY_CODES = st.sampled_from([*sorted(RULES.currencies), "JPY", "KWD", "XAU", "EUR", ""])

Outcome = Earning | tuple[type[Exception], str]
Args = tuple[str, int, str, int, int]  # currency, amount_minor, category, tier bps, earned today


def outcome(compute: Callable[..., Earning], *args: object) -> Outcome:
    """The earning, or the error's type and message: both must match the reference."""
    try:
        return compute(*args)
    except ValueError as error:  # UnknownCurrency is one
        return type(error), str(error)


def assert_same(rules: Rules, *args: object) -> None:
    fast = outcome(compute_earning, rules, *args)
    assert fast == outcome(_reference_compute_earning, rules, *args)
    if isinstance(fast, Earning):  # dataclass equality compares fields; pin the types too
        assert all(type(s) is Step for s in fast.steps) and type(fast.points) is int


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(RULE_SETS) | any_rates(),
    CURRENCY_CODES,
    AMOUNTS,
    CATEGORIES,
    TIER_BPS,
    EARNED_TODAY,
)
@example(RULES, "CNY", 12345, "dining", BPS, 0)
@example(RULES, "CNY", 1234, "dining", 12_500, 19_990)
@example(RULES, "EUR", 0, "dining", -1, -1)  # the unknown currency is reported first
@example(THIRDS, "CNY", 1, "books", BPS, 0)
@example(RULES, "CNY", 100, "books", BPS, DAILY_CAP)  # exactly 1 point, but none left today
@example(THIRDS, "JPY", INT64_MAX, "travel", MAX_MULTIPLIER_BPS, 0)  # beyond int64
def test_compute_earning_matches_the_reference(
    rules: Rules, currency: str, amount: int, category: str, tier: int, today: int
) -> None:
    assert_same(rules, currency, amount, category, tier, today)


@pytest.mark.parametrize(
    ("rules", "args", "reason"),
    [
        (RULES, ("CNY", 100, "top_up", BPS, 0), NON_EARNING_CATEGORY),
        (RULES, ("CNY", 100, "books", 0, 0), ZERO_MULTIPLIER),
        (ODD_MULTIPLIERS, ("CNY", 100, "zero", BPS, 0), ZERO_MULTIPLIER),
        (RULES, ("CNY", 99, "books", BPS, 0), BELOW_ONE_POINT),
        (RULES, ("CNY", 100, "books", BPS, DAILY_CAP), DAILY_CAP_REACHED),
        (RULES, ("CNY", 100, "books", BPS, 0), ""),
    ],
)
def test_every_none_reason_matches(rules: Rules, args: Args, reason: str) -> None:
    assert_same(rules, *args)
    assert compute_earning(rules, *args).none_reason == reason


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("EUR", 100, "books", BPS, 0), UnknownCurrency),
        (("EUR", 0, "books", -1, -1), UnknownCurrency),  # the currency is checked first
        (("CNY", 0, "books", BPS, 0), ValueError),
        (("CNY", INT64_MAX + 1, "books", BPS, 0), ValueError),
        (("CNY", 100, "books", MAX_MULTIPLIER_BPS + 1, 0), ValueError),
        (("CNY", 100, "books", BPS, -1), ValueError),
    ],
)
def test_bad_inputs_raise_the_same_errors(args: Args, error: type[ValueError]) -> None:
    assert_same(RULES, *args)
    found = outcome(compute_earning, RULES, *args)
    assert isinstance(found, tuple) and found[0] is error


def test_many_currency_objects_each_use_their_own_rate() -> None:
    # more currencies than the per-currency cache keeps, several of them equal in value
    for index in range(600):
        currency = Currency("CNY", index % 5, Fraction(index % 97 + 1, index % 13 + 1))
        assert_same(with_currencies(RULES, currency), "CNY", 123_457, "dining", 12_500, 0)


# ---- show ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(0), "0"),
        (Fraction(5), "5"),
        (Fraction(1234, 100), "12.34"),
        (Fraction(1, 8), "0.125"),
        (Fraction(1, 1024), "0.0009765625"),
        (Fraction(3, 10**12), "0.000000000003"),
        (Fraction(-1234, 100), "-12.34"),
        (Fraction(-7), "-7"),
        (Fraction(1, 3), "1/3 (about 0.3333)"),
        (Fraction(2, 3), "2/3 (about 0.6666)"),  # truncated, never rounded
        (Fraction(37, 3), "37/3 (about 12.3333)"),
        (Fraction(1, 300_000), "1/300000 (about 0.0000)"),
        (Fraction(-1, 3), "-1/3 (about -0.3333)"),
        (Fraction(-1, 300_000), "-1/300000 (about -0.0000)"),
        (Fraction(10**20 + 1, 7), "100000000000000000001/7 (about 14285714285714285714.4285)"),
    ],
)
def test_show(value: Fraction, text: str) -> None:
    assert earn.show(value) == text
    assert _reference_show(value) == text


@settings(max_examples=1000, deadline=None)
@given(st.fractions() | st.fractions(max_denominator=10**4) | st.integers().map(Fraction))
def test_show_matches_the_reference(value: Fraction) -> None:
    assert earn.show(value) == _reference_show(value)


def test_show_takes_integers_as_it_did() -> None:
    assert earn.show(3) == _reference_show(3) == "3"  # type: ignore[arg-type]
