"""Earning points on a payment, and the dates of a lot.

Pure functions over `Rules`: no SQL, no gRPC, no clock. Arithmetic is on integers and
Fractions only, and rounding is explicit and happens once: earning rounds down at the very
end, so chained multipliers never compound a rounding loss; clawback (domain/clawback.py)
rounds up, so a refund never leaves points behind for money that was given back
(docs/design.md §3).

Dates: every datetime taken or returned is timezone-aware; results are in UTC. A lot's expiry
is an exclusive bound, the first instant of the month after the expiry month in the rules'
time zone: a lot is usable while `now < expires_at`. An exclusive bound needs no "last
microsecond" and compares correctly at any timestamp precision.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import NamedTuple
from zoneinfo import ZoneInfo

from services.points.domain.rules import (
    BPS,
    MAX_MULTIPLIER_BPS,
    Currency,
    Rules,
    UnknownCurrency,
)
from services.points.domain.strict import INT64_MAX

__all__ = [
    "BELOW_ONE_POINT",
    "DAILY_CAP_REACHED",
    "NON_EARNING_CATEGORY",
    "ZERO_MULTIPLIER",
    "Earning",
    "EarningStep",
    "Step",
    "UnknownCurrency",  # defined with the rules, raised here too
    "available_at",
    "base_points",
    "compute_earning",
    "expires_at",
    "explain",
    "local_day",
    "local_day_bounds",
    "show",
]

# Why a payment earned nothing (Earning.none_reason); "" when it earned points.
NON_EARNING_CATEGORY = "NON_EARNING_CATEGORY"
ZERO_MULTIPLIER = "ZERO_MULTIPLIER"
BELOW_ONE_POINT = "BELOW_ONE_POINT"
DAILY_CAP_REACHED = "DAILY_CAP_REACHED"

_SHOWN_DECIMALS = 4  # for amounts that are not exact decimals (a rate such as "1/3")
_SHOWN_SCALE = 10**_SHOWN_DECIMALS


class EarningStep(StrEnum):
    BASE = "base"
    CATEGORY = "category"
    TIER = "tier"
    ROUND_DOWN = "round_down"
    CAP_PER_PAYMENT = "cap_per_payment"
    CAP_PER_MEMBER_DAY = "cap_per_member_day"


# bound once: on the settlement path a module global costs less than an enum attribute
_BASE = EarningStep.BASE
_CATEGORY = EarningStep.CATEGORY
_TIER = EarningStep.TIER
_ROUND_DOWN = EarningStep.ROUND_DOWN
_CAP_PER_PAYMENT = EarningStep.CAP_PER_PAYMENT
_CAP_PER_MEMBER_DAY = EarningStep.CAP_PER_MEMBER_DAY


class Step(NamedTuple):
    """A NamedTuple, not a frozen dataclass: six are made per settlement."""

    name: str  # an EarningStep
    value: str  # the running result after this step: "a/b" before rounding, an integer after
    note: str  # the step in words, for `explain`


class Earning(NamedTuple):
    points: int
    steps: tuple[Step, ...]
    none_reason: str  # "" when points > 0

    def document(self) -> list[dict[str, str]]:
        """JSON-able steps, e.g. for a transaction's stored explanation."""
        return [{"name": s.name, "value": s.value, "note": s.note} for s in self.steps]


def compute_earning(
    rules: Rules,
    currency_code: str,
    amount_minor: int,
    category: str,
    tier_multiplier_bps: int,
    earned_today: int,
) -> Earning:
    """Points for one payment; `earned_today` is what the daily cap has already counted today."""
    rate = _rate(rules, currency_code, category, tier_multiplier_bps)  # unknown currency first
    _check_inputs(amount_minor, tier_multiplier_bps, earned_today)
    terms = rate.terms
    # Exact values are reduced numerator/denominator pairs: the same rationals as Fraction
    # gives, without its per-operation overhead on the settlement hot path.
    num, den = _reduce(amount_minor * terms.numerator, terms.denominator)
    money = f"{_decimal(amount_minor, terms.minor_units, terms.scale)} {currency_code}"
    steps = [Step(_BASE, f"{num}/{den}", f"{money} at {rate.rate} is {_show(num, den)}")]
    if rate.non_earning:
        steps.append(Step(_CATEGORY, "0", f"{category} payments never earn points"))
        return Earning(0, tuple(steps), NON_EARNING_CATEGORY)
    num, den = _reduce(num * rate.category_bps, den * BPS)
    steps.append(Step(_CATEGORY, f"{num}/{den}", f"{rate.category_note} is {_show(num, den)}"))
    num, den = _reduce(num * tier_multiplier_bps, den * BPS)
    steps.append(Step(_TIER, f"{num}/{den}", f"{rate.tier_note} is {_show(num, den)}"))
    points = num // den  # the one rounding of the computation
    steps.append(Step(_ROUND_DOWN, str(points), f"rounded down to {points}"))
    points = _cap_per_payment(rules, points, steps)
    points = _cap_per_day(rules, points, earned_today, steps)
    if points > INT64_MAX:
        raise ValueError("amount_minor: earns more points than an int64 holds")
    return Earning(points, tuple(steps), _none_reason(num, den, points))


def base_points(
    rules: Rules, currency_code: str, amount_minor: int, category: str
) -> tuple[int, int]:
    """The payment's points before the tier, the rounding and the caps: amount x rate x
    category multiplier (0 in a non-earning category), as (numerator, denominator).
    Campaigns multiply this."""
    rate = _rate(rules, currency_code, category, BPS)
    if rate.non_earning:
        return 0, 1
    terms = rate.terms
    return amount_minor * terms.numerator * rate.category_bps, terms.denominator * BPS


def _check_inputs(amount_minor: int, tier_multiplier_bps: int, earned_today: int) -> None:
    if not 0 < amount_minor <= INT64_MAX:
        raise ValueError("amount_minor: must be > 0 and fit in an int64")
    if not 0 <= tier_multiplier_bps <= MAX_MULTIPLIER_BPS:
        raise ValueError(f"tier_multiplier_bps: must be within 0..{MAX_MULTIPLIER_BPS}")
    if earned_today < 0:
        raise ValueError("earned_today: must not be negative")


class _Terms(NamedTuple):
    """What a currency contributes to every earning, worked out once per Currency object."""

    minor_units: int
    scale: int  # 10**minor_units
    numerator: int  # points per minor unit is numerator / denominator
    denominator: int
    rate: str  # "0.9 points"


# id(currency) -> (currency, terms); the currency is kept so that its id is never reused
_TERMS: dict[int, tuple[Currency, _Terms]] = {}
_TERMS_KEPT = 256  # rules are few; the bound only matters for code that builds many


def _terms(currency: Currency) -> _Terms:
    found = _TERMS.get(id(currency))
    if found is not None and found[0] is currency:
        return found[1]
    rate = currency.points_per_unit
    scale: int = 10**currency.minor_units
    terms = _Terms(
        currency.minor_units, scale, rate.numerator, scale * rate.denominator, _points(rate)
    )
    if len(_TERMS) >= _TERMS_KEPT:
        _TERMS.clear()
    _TERMS[id(currency)] = (currency, terms)
    return terms


def _reduce(num: int, den: int) -> tuple[int, int]:
    divisor = math.gcd(num, den)
    return num // divisor, den // divisor


class _Rate(NamedTuple):
    """What a (currency, category, tier multiplier) contributes to every earning under one
    `Rules`: worked out once, so that a payment pays only for its own amount's arithmetic."""

    terms: _Terms
    rate: str  # "0.9 points per 1 CNY"
    non_earning: bool
    category_bps: int
    category_note: str  # "×1.5 for dining", before " is <value>"
    tier_note: str  # "×1.2 for the tier"


# (id(rules), currency, category, tier bps) -> (rules, rate); the rules are kept so that
# their id is never reused while the entry lives
_RATES: dict[tuple[int, str, str, int], tuple[Rules, _Rate]] = {}
_RATES_KEPT = 4096  # currencies x categories x tiers of the rules in use: far fewer


def _rate(rules: Rules, currency_code: str, category: str, tier_bps: int) -> _Rate:
    key = (id(rules), currency_code, category, tier_bps)
    found = _RATES.get(key)
    if found is not None and found[0] is rules:
        return found[1]
    rate = _new_rate(rules, currency_code, category, tier_bps)
    if len(_RATES) >= _RATES_KEPT:
        _RATES.clear()
    _RATES[key] = (rules, rate)
    return rate


def _new_rate(rules: Rules, currency_code: str, category: str, tier_bps: int) -> _Rate:
    terms = _terms(rules.currency(currency_code))
    category_bps = rules.category_multipliers_bps.get(category)
    if category_bps is None:
        category_bps, what = BPS, f"for {category} (not a bonus category)"
    else:
        what = f"for {category}"
    return _Rate(
        terms,
        f"{terms.rate} per 1 {currency_code}",
        category in rules.non_earning_categories,
        category_bps,
        f"{_times(category_bps)} {what}",
        f"{_times(tier_bps)} for the tier",
    )


@functools.lru_cache(maxsize=1024)  # a handful of multipliers recur on every payment
def _times(bps: int) -> str:
    return f"×{_show(*_reduce(bps, BPS))}"


def _cap_per_payment(rules: Rules, points: int, steps: list[Step]) -> int:
    cap = rules.cap_per_payment
    if cap is None:
        note = "no cap per payment"
    elif points > cap:
        points, note = cap, f"capped at {cap} per payment"
    else:
        note = f"within the cap of {cap} per payment"
    steps.append(Step(_CAP_PER_PAYMENT, str(points), note))
    return points


def _cap_per_day(rules: Rules, points: int, earned_today: int, steps: list[Step]) -> int:
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
    steps.append(Step(_CAP_PER_MEMBER_DAY, str(points), note))
    return points


def _none_reason(num: int, den: int, points: int) -> str:
    if points > 0:
        return ""
    if num == 0:
        return ZERO_MULTIPLIER
    return BELOW_ONE_POINT if num < den else DAILY_CAP_REACHED  # caps per payment are >= 1


def _points(value: Fraction) -> str:
    return f"{show(value)} point{'' if value == 1 else 's'}"


def explain(earning: Earning) -> str:
    """One English sentence: the result, then every step in order."""
    points = earning.points
    if points > 0:
        head = f"Earned {points} point{'' if points == 1 else 's'}"
    else:
        head = f"Earned no points ({earning.none_reason.lower().replace('_', ' ')})"
    return f"{head}: {', '.join(step.note for step in earning.steps)}."


def show(value: Fraction) -> str:
    """An exact decimal ("12.34") when there is one, else "37/3 (about 12.3333)"."""
    return _show(value.numerator, value.denominator)


def _show(num: int, den: int) -> str:
    """`show` of the reduced fraction num/den (den > 0)."""
    sign = "-" if num < 0 else ""
    exact = _exact_decimal(den)
    if exact is None:  # a repeating decimal: show it exactly as a fraction, and roughly
        about = _decimal(abs(num) * _SHOWN_SCALE // den, _SHOWN_DECIMALS, _SHOWN_SCALE)
        return f"{num}/{den} (about {sign}{about})"
    places, factor, scale = exact
    return f"{sign}{_decimal(abs(num) * factor, places, scale)}"


@functools.lru_cache(maxsize=4096)  # denominators divide 10**k × a rate's: few distinct ones
def _exact_decimal(den: int) -> tuple[int, int, int] | None:
    """(places, 10**places // den, 10**places) when 1/den has exactly that many decimals."""
    rest, twos, fives = den, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return None
    places = max(twos, fives)
    scale: int = 10**places
    return places, scale // den, scale


def _decimal(scaled: int, places: int, scale: int) -> str:
    """scaled / scale with exactly `places` decimals; scaled >= 0 and scale == 10**places."""
    if not places:
        return str(scaled)
    return f"{scaled // scale}.{str(scaled % scale).zfill(places)}"


# ---- dates --------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(UTC)


def available_at(rules: Rules, occurred: datetime) -> datetime:
    """When pending points become available: `pending_days` x 24 h after the payment."""
    return _aware(occurred) + timedelta(days=rules.pending_days)


def expires_at(rules: Rules, earned: datetime) -> datetime:
    """Exclusive end of a lot: the first instant after the month `expiry_months` after earning.

    Months are calendar months in the rules' time zone, so a payment at 20:00 UTC on 31 January
    is a February earning in Shanghai.
    """
    local = _aware(earned).astimezone(rules.zone)
    # months since year 0 of the month *after* the expiry month
    index = local.year * 12 + local.month - 1 + rules.expiry_months + 1
    year, month0 = divmod(index, 12)
    return datetime(year, month0 + 1, 1, tzinfo=rules.zone).astimezone(UTC)


def local_day(rules: Rules, moment: datetime) -> date:
    """The calendar day in the rules' time zone, which the daily cap counts by."""
    return _local_day(rules.timezone, moment)


@functools.lru_cache(maxsize=4096)  # a settlement asks for its payment's day several times
def _local_day(timezone: str, moment: datetime) -> date:
    return _aware(moment).astimezone(ZoneInfo(timezone)).date()


def local_day_bounds(rules: Rules, day: date) -> tuple[datetime, datetime]:
    """[start, end) of a local calendar day in UTC, e.g. to sum what a member earned that day."""
    start = datetime.combine(day, time(), rules.zone)
    end = datetime.combine(day + timedelta(days=1), time(), rules.zone)
    return start.astimezone(UTC), end.astimezone(UTC)
