"""The China calendar a campaign's schedule may name: public holidays and Golden Weeks.

From the `holidays` package's China calendar (the one privacy counts deadlines on), which
knows each officially published year's holidays and make-up working days (调休). A public
holiday is a day the calendar gives off that is not an ordinary weekend day: the holidays
themselves and the weekdays moved off. A Golden Week is the whole run of days off around the
Spring Festival or National Day, weekends in it included (e.g. 2026-10-01..10-07).
"""

from __future__ import annotations

import functools
from datetime import date, timedelta
from enum import StrEnum

import holidays


class HolidaySchedule(StrEnum):
    PUBLIC_HOLIDAYS = "PUBLIC_HOLIDAYS"
    GOLDEN_WEEKS = "GOLDEN_WEEKS"


HOLIDAY_SCHEDULES = tuple(HolidaySchedule)
_GOLDEN_NAMES = ("Spring Festival", "National Day")
_LONGEST_RUN_DAYS = 14  # a run of days off never reaches this: the walk stays bounded


@functools.lru_cache(maxsize=64)
def _china(year: int) -> holidays.HolidayBase:
    return holidays.country_holidays("CN", years=year)


def is_public_holiday(day: date) -> bool:
    return day in _china(day.year)


def _is_day_off(day: date) -> bool:
    return not _china(day.year).is_working_day(day)


@functools.lru_cache(maxsize=64)
def golden_weeks(year: int) -> frozenset[date]:
    """Every day of the year's Golden Weeks (the run of days off around each anchor)."""
    calendar = _china(year)
    anchors = [d for d, name in calendar.items() if any(n in name for n in _GOLDEN_NAMES)]
    days: set[date] = set()
    for anchor in anchors:
        days.add(anchor)
        for step in (timedelta(days=-1), timedelta(days=1)):
            day = anchor + step
            for _ in range(_LONGEST_RUN_DAYS):
                if not _is_day_off(day):
                    break
                days.add(day)
                day += step
    return frozenset(d for d in days if d.year == year)


def is_golden_week(day: date) -> bool:
    return day in golden_weeks(day.year) or day in golden_weeks(day.year - 1)


def matches(schedule: HolidaySchedule, day: date) -> bool:
    if schedule is HolidaySchedule.PUBLIC_HOLIDAYS:
        return is_public_holiday(day)
    return is_golden_week(day)
