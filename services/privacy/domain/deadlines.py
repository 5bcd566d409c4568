"""Deadlines of data-subject requests in working days on the China calendar (docs/design.md §7).

Counting rule: the day of receipt never counts. Working day 1 is the first working day after
the receipt date (Asia/Shanghai), so a request received on a working day counts from the next
working day, and one received on a weekend or holiday counts from the first working day after
it. The due date is the n-th such working day, so it is always a working day.

`Deadline.due` is exclusive: the instant the day after the due date starts (00:00
Asia/Shanghai). The request is overdue from that instant on, so the whole due date is usable.

Working days come from the `holidays` package's China calendar, which knows the public
holidays and the make-up weekend working days (调休) of each officially published year and
answers other years by rule (no make-up days). A year counts as officially known when the
package has at least one make-up weekend working day in it (every published year since 2001
has some) or when an operator's override file says so. A deadline whose span touches any other
year is `provisional`. Operators load a newly published schedule as overrides: extra holidays,
extra working days, and the years the file covers fully (`official_years`): the settings name
the file, deadlines.py reads it.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import TypeVar
from zoneinfo import ZoneInfo

import holidays

from services.runtime.errors import bad_field

ZONE = ZoneInfo("Asia/Shanghai")
DEFAULT_WORKING_DAYS = 15
MIN_WORKING_DAYS = 1
MAX_WORKING_DAYS = 90  # also the bound on the total after extensions
MAX_REASON_CHARS = 200
# The package's schedules start in 2001 and its lunar tables end in 2100; 90 working days from
# a late-2099 receipt stay inside MAX_YEAR + 1, which is populated too.
MIN_YEAR = 2001
MAX_YEAR = 2099
# New Year's make-up working days of year Y+1 have fallen on Dec 29-31 of year Y (2002, 2007),
# so a deadline ending this late in December also depends on the next year's schedule.
LATE_DECEMBER_DAY = 20
MAX_OVERRIDES_BYTES = 64 * 1024
MAX_OVERRIDE_DATES = 1000

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # date.fromisoformat alone also takes "20270211"
_OVERRIDE_KEYS = frozenset({"official_years", "holidays", "working_days"})
_T = TypeVar("_T")


class CalendarError(ValueError):
    """An overrides document is invalid; `path` names the offending value, e.g. `holidays[2]`."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class CalendarOverrides:
    """Operator-loaded corrections; they win over the package, working days over holidays."""

    holidays: frozenset[date] = frozenset()
    working_days: frozenset[date] = frozenset()
    # years whose whole published schedule the overrides carry, so no longer provisional
    official_years: frozenset[int] = frozenset()


@lru_cache(maxsize=1)
def _china() -> holidays.HolidayBase:
    # Populated once for every reachable year and never expanded afterwards, so reads do not
    # mutate it and one instance can be shared by every WorkingCalendar (~0.15 s).
    return holidays.country_holidays("CN", years=range(MIN_YEAR - 1, MAX_YEAR + 2), expand=False)


@lru_cache(maxsize=1)
def _package_official_years() -> frozenset[int]:
    # Years computed by rule have no make-up weekend working days; published years all do.
    return frozenset(day.year for day in _china().weekend_workdays)


class WorkingCalendar:
    """China working days: the `holidays` package plus operator overrides."""

    def __init__(self, overrides: CalendarOverrides | None = None) -> None:
        self.overrides = overrides or CalendarOverrides()

    def is_working_day(self, day: date) -> bool:
        # a deadline counted from a receipt in MAX_YEAR may end in the year after
        _check_year("day", day.year, MAX_YEAR + 1)
        if day in self.overrides.working_days:
            return True
        if day in self.overrides.holidays:
            return False
        return _china().is_working_day(day)

    def nth_working_day_after(self, day: date, n: int) -> date:
        """The n-th working day after `day`, `day` itself never counting (n >= 1)."""
        # The package's get_nth_working_day walks the same way but cannot see the overrides.
        for _ in range(n):
            day += timedelta(days=1)
            while not self.is_working_day(day):
                day += timedelta(days=1)
        return day

    def is_official(self, year: int) -> bool:
        """Whether the year's published schedule is known, not derived by rule."""
        return year in self.overrides.official_years or year in _package_official_years()

    def is_provisional(self, first: date, last: date) -> bool:
        """Whether the days first..last depend on a schedule that is not officially known."""
        years = set(range(first.year, last.year + 1))
        if last.month == 12 and last.day >= LATE_DECEMBER_DAY:
            years.add(last.year + 1)
        return not all(self.is_official(year) for year in years)


# the package's calendar without overrides: what a deadline counts on when given no calendar
# (the service always gives the one its settings name)
PACKAGE_CALENDAR = WorkingCalendar()


@dataclass(frozen=True)
class Extension:
    extra_working_days: int
    reason: str


@dataclass(frozen=True)
class Deadline:
    received_on: date  # the receipt date in Asia/Shanghai; it never counts
    due_date: date  # the last day to answer, always a working day
    due: datetime  # exclusive: 00:00 Asia/Shanghai of the day after due_date
    working_days: int  # in total, extensions included
    provisional: bool
    extensions: tuple[Extension, ...] = field(default=())


def deadline(
    received_at: datetime,
    working_days: int = DEFAULT_WORKING_DAYS,
    calendar: WorkingCalendar | None = None,
) -> Deadline:
    """The deadline of a request received at `received_at` (an aware datetime).

    Working day 1 is the first working day after the receipt date in Asia/Shanghai: a request
    received on a working day counts from the next working day, one received on a weekend or
    holiday from the first working day after it. INVALID_ARGUMENT for naive datetimes, years
    outside MIN_YEAR..MAX_YEAR and working_days outside 1..90.
    """
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise bad_field("received_at", "must carry a time zone")
    _check_working_days("working_days", working_days)
    received_on = received_at.astimezone(ZONE).date()
    _check_year("received_at", received_on.year)
    return _count(received_on, working_days, (), calendar or PACKAGE_CALENDAR)


def extend(
    current: Deadline,
    extra_working_days: int,
    reason: str,
    calendar: WorkingCalendar | None = None,
) -> Deadline:
    """The deadline moved on by `extra_working_days` working days after its due date.

    The reason is required (1..200 characters, no control characters) because an extension
    must be explained to the data subject; the total stays within 90 working days.
    """
    _check_working_days("extra_working_days", extra_working_days)
    total = current.working_days + extra_working_days
    if total > MAX_WORKING_DAYS:
        raise bad_field("extra_working_days", f"the total must not exceed {MAX_WORKING_DAYS}")
    extension = Extension(extra_working_days, _checked_reason(reason))
    extensions = (*current.extensions, extension)
    # Counting the total from receipt equals counting the extra days after the due date,
    # which is a working day, and it re-derives `provisional` over the whole span.
    return _count(current.received_on, total, extensions, calendar or PACKAGE_CALENDAR)


def is_overdue(current: Deadline, now: datetime) -> bool:
    """Whether `now` (an aware datetime) is at or past the exclusive `due` instant."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise bad_field("now", "must carry a time zone")
    return now >= current.due


def _count(
    received_on: date,
    working_days: int,
    extensions: tuple[Extension, ...],
    calendar: WorkingCalendar,
) -> Deadline:
    due_date = calendar.nth_working_day_after(received_on, working_days)
    due = datetime.combine(due_date + timedelta(days=1), time(0), tzinfo=ZONE)
    provisional = calendar.is_provisional(received_on, due_date)
    return Deadline(received_on, due_date, due, working_days, provisional, extensions)


def _check_working_days(name: str, value: int) -> None:
    # bool is an int; True must not pass for one working day
    if isinstance(value, bool) or not MIN_WORKING_DAYS <= value <= MAX_WORKING_DAYS:
        raise bad_field(name, f"must be between {MIN_WORKING_DAYS} and {MAX_WORKING_DAYS}")


def _check_year(name: str, year: int, last: int = MAX_YEAR) -> None:
    if not MIN_YEAR <= year <= last:
        raise bad_field(name, f"must fall in the years {MIN_YEAR}..{MAX_YEAR}")


def _checked_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise bad_field("reason", "must not be empty")
    if len(text) > MAX_REASON_CHARS:
        raise bad_field("reason", f"must be at most {MAX_REASON_CHARS} characters")
    if any(not char.isprintable() for char in text):
        raise bad_field("reason", "must not contain control characters")
    return text


def parse_overrides(doc: Mapping[str, object]) -> CalendarOverrides:
    """Validate an overrides document (from TOML or a dict); CalendarError at the first fault.

    Keys, all optional: `official_years` (integers), `holidays` and `working_days` (TOML dates
    or "YYYY-MM-DD" strings). Unknown keys, duplicates and a date in both lists are errors,
    because a typo must not silently shift a legal deadline.
    """
    unknown = sorted(set(doc) - _OVERRIDE_KEYS)
    if unknown:
        raise CalendarError(unknown[0], "unknown key")
    extra_holidays = _dates("holidays", doc.get("holidays", []))
    working_days = _dates("working_days", doc.get("working_days", []))
    both = sorted(extra_holidays & working_days)
    if both:
        raise CalendarError("holidays", f"{both[0].isoformat()} is also in working_days")
    official = _unique("official_years", _years(doc.get("official_years", [])))
    return CalendarOverrides(extra_holidays, working_days, official)


def overrides_from_toml(raw: bytes, source: str) -> CalendarOverrides:
    """Validate the bytes of a TOML overrides file; `source` (its path) names it in errors."""
    if len(raw) > MAX_OVERRIDES_BYTES:
        raise CalendarError(source, f"must be at most {MAX_OVERRIDES_BYTES} bytes")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise CalendarError(source, f"not valid TOML: {error}") from None
    return parse_overrides(doc)


def _dates(key: str, values: object) -> frozenset[date]:
    return _unique(key, [_date(f"{key}[{i}]", value) for i, value in enumerate(_list(key, values))])


def _date(path: str, value: object) -> date:
    # datetime is a date subclass; a time of day in a holiday list is a mistake, not a date
    if isinstance(value, date) and not isinstance(value, datetime):
        day = value
    elif isinstance(value, str) and _ISO_DATE.fullmatch(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise CalendarError(path, "is not a valid date") from None
    else:
        raise CalendarError(path, "must be a date such as 2027-02-11")
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise CalendarError(path, f"must fall in the years {MIN_YEAR}..{MAX_YEAR}")
    return day


def _years(values: object) -> list[int]:
    years: list[int] = []
    for i, year in enumerate(_list("official_years", values)):
        if isinstance(year, bool) or not isinstance(year, int):
            raise CalendarError(f"official_years[{i}]", "must be an integer year")
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise CalendarError(f"official_years[{i}]", f"must be in {MIN_YEAR}..{MAX_YEAR}")
        years.append(year)
    return years


def _list(key: str, values: object) -> list[object]:
    if not isinstance(values, list):
        raise CalendarError(key, "must be a list")
    if len(values) > MAX_OVERRIDE_DATES:
        raise CalendarError(key, f"must have at most {MAX_OVERRIDE_DATES} entries")
    return values


def _unique(key: str, values: Iterable[_T]) -> frozenset[_T]:
    seen: set[_T] = set()
    for value in values:
        if value in seen:
            raise CalendarError(key, f"lists {value} twice")
        seen.add(value)
    return frozenset(seen)
