"""Deadlines of data-subject requests in working days on the China calendar.

Expected dates are counted by hand from the State Council notices, not from the package:
2025 Spring Festival off Jan 28 - Feb 4, make-up working days Sun Jan 26 and Sat Feb 8;
Tomb-Sweeping Day off Fri Apr 4; Labour Day make-up working day Sun Apr 27;
National Day off Oct 1 - 8, make-up working days Sun Sep 28 and Sat Oct 11.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.privacy import deadlines
from services.privacy import settings as privacy_settings
from services.privacy.deadlines import load_calendar, load_overrides
from services.privacy.domain import deadlines as rules
from services.privacy.domain.deadlines import (
    ZONE,
    CalendarError,
    CalendarOverrides,
    Deadline,
    WorkingCalendar,
    deadline,
    extend,
    is_overdue,
    parse_overrides,
)
from services.runtime.config import load_settings
from services.runtime.errors import Code, DomainError

CALENDAR = WorkingCalendar()
CHINA = holidays.country_holidays("CN")
EXAMPLE_FILE = Path(deadlines.__file__).with_name("calendar_overrides.example.toml")


def at(year: int, month: int, day: int, hour: int = 10) -> datetime:
    return datetime(year, month, day, hour, tzinfo=ZONE)


def due_date(received: datetime, working_days: int = 15) -> date:
    return deadline(received, working_days, CALENDAR).due_date


def violation(error: pytest.ExceptionInfo[DomainError]) -> str:
    assert error.value.code is Code.INVALID_ARGUMENT
    return error.value.violations[0].field


# -- the package's China calendar is what docs/design.md §7 says it is ---------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2025, 1, 26), True),  # Sunday, make-up working day
        (date(2025, 1, 27), True),
        (date(2025, 1, 28), False),  # Spring Festival's eve
        (date(2025, 2, 4), False),
        (date(2025, 2, 5), True),
        (date(2025, 2, 8), True),  # Saturday, make-up working day
        (date(2025, 9, 28), True),  # Sunday, make-up working day
        (date(2025, 10, 1), False),
        (date(2025, 10, 8), False),
        (date(2025, 10, 9), True),
        (date(2025, 10, 11), True),  # Saturday, make-up working day
        (date(2025, 10, 12), False),
    ],
)
def test_package_knows_2025_holidays_and_make_up_days(day: date, working: bool) -> None:
    assert CHINA.is_working_day(day) is working
    assert CALENDAR.is_working_day(day) is working


def test_published_years_are_official_and_later_years_are_not() -> None:
    assert all(CALENDAR.is_official(year) for year in range(2001, 2027))
    assert not any(CALENDAR.is_official(year) for year in range(2027, 2031))


# -- counting -------------------------------------------------------------------------------


def test_spring_festival_with_make_up_days() -> None:
    # Fri Jan 24: 1 Sun Jan 26, 2 Jan 27, 3-6 Feb 5-8 (Sat), 7-11 Feb 10-14, 12-15 Feb 17-20
    result = deadline(at(2025, 1, 24), 15, CALENDAR)
    assert result == Deadline(
        received_on=date(2025, 1, 24),
        due_date=date(2025, 2, 20),
        due=datetime(2025, 2, 21, tzinfo=ZONE),
        working_days=15,
        provisional=False,
    )
    assert result.due.utcoffset() == timedelta(hours=8)


def test_received_on_last_working_day_before_spring_festival() -> None:
    # Mon Jan 27: 1-4 Feb 5-8, 5-9 Feb 10-14, 10-14 Feb 17-21, 15 Mon Feb 24
    assert due_date(at(2025, 1, 27)) == date(2025, 2, 24)


def test_received_on_a_make_up_working_day_counts_from_the_next() -> None:
    # Sun Jan 26 is a working day, so it does not count: 1 Jan 27, ..., 15 Fri Feb 21
    assert due_date(at(2025, 1, 26)) == date(2025, 2, 21)


def test_received_during_a_holiday_counts_from_the_first_working_day_after() -> None:
    assert due_date(at(2025, 2, 1)) == date(2025, 2, 24)  # a Saturday inside the break
    assert due_date(at(2025, 1, 30)) == date(2025, 2, 24)  # a Thursday inside the break


def test_received_on_a_weekend_crossing_a_single_holiday() -> None:
    # Sat Mar 15: 1-5 Mar 17-21, 6-10 Mar 24-28, 11-14 Mar 31 - Apr 3, Fri Apr 4 off, 15 Apr 7
    assert due_date(at(2025, 3, 15)) == date(2025, 4, 7)


def test_national_day_with_make_up_days() -> None:
    # Fri Sep 26: 1 Sun Sep 28, 2-3 Sep 29-30, 4-6 Oct 9-11 (Sat), 7-11 Oct 13-17, 15 Oct 23
    assert due_date(at(2025, 9, 26)) == date(2025, 10, 23)


def test_received_on_last_working_day_before_national_day() -> None:
    # Tue Sep 30: 1-3 Oct 9-11, 4-8 Oct 13-17, 9-13 Oct 20-24, 14 Oct 27, 15 Oct 28
    assert due_date(at(2025, 9, 30)) == date(2025, 10, 28)


def test_receipt_date_is_taken_in_shanghai() -> None:
    # 17:30 UTC on Sep 30 is 01:30 on Oct 1 in Shanghai: a holiday, not the last working day
    received = datetime(2025, 9, 30, 17, 30, tzinfo=UTC)
    result = deadline(received, 15, CALENDAR)
    assert result.received_on == date(2025, 10, 1)
    assert result.due_date == date(2025, 10, 28)  # same as from Sep 30: Oct 1-8 never count
    # 23:59 on Sat Sep 27 in Shanghai counts from Sun Sep 28, a make-up working day;
    # 00:00 on Sep 28 is receipt on that working day, so counting starts on Sep 29
    assert due_date(datetime(2025, 9, 27, 15, 59, tzinfo=UTC)) == date(2025, 10, 23)
    assert due_date(datetime(2025, 9, 27, 16, 0, tzinfo=UTC)) == date(2025, 10, 24)


def test_one_working_day() -> None:
    assert due_date(at(2025, 9, 30), 1) == date(2025, 10, 9)
    assert due_date(at(2025, 10, 10), 1) == date(2025, 10, 11)  # Friday to make-up Saturday


def test_default_is_fifteen_working_days() -> None:
    assert deadline(at(2025, 3, 15), calendar=CALENDAR).working_days == 15


# -- extensions and overdue -----------------------------------------------------------------


def test_extension_counts_after_the_due_date() -> None:
    first = deadline(at(2025, 3, 15), 15, CALENDAR)
    # 15 Apr 7, 16-19 Apr 8-11, 20-24 Apr 14-18, 25-29 Apr 21-25, 30 Sun Apr 27 (make-up)
    extended = extend(first, 15, "  identity documents requested  ", CALENDAR)
    assert extended.due_date == date(2025, 4, 27)
    assert extended.working_days == 30
    assert extended.received_on == first.received_on
    assert extended.extensions == (rules.Extension(15, "identity documents requested"),)
    again = extend(extended, 1, "archive restore", CALENDAR)
    assert again.due_date == date(2025, 4, 28)
    assert [e.reason for e in again.extensions] == [
        "identity documents requested",
        "archive restore",
    ]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201, "line\nbreak", "tab\there"])
def test_extension_needs_a_short_plain_reason(reason: str) -> None:
    first = deadline(at(2025, 3, 15), 15, CALENDAR)
    with pytest.raises(DomainError) as error:
        extend(first, 5, reason, CALENDAR)
    assert violation(error) == "reason"


def test_extension_reason_of_maximum_length_is_accepted() -> None:
    first = deadline(at(2025, 3, 15), 15, CALENDAR)
    assert extend(first, 5, "x" * 200, CALENDAR).extensions[0].reason == "x" * 200
    assert extend(first, 5, "需要核实身份", CALENDAR).extensions[0].reason == "需要核实身份"


@pytest.mark.parametrize(("current", "extra"), [(15, 0), (15, 76), (90, 1), (1, -1)])
def test_extension_bounds(current: int, extra: int) -> None:
    first = deadline(at(2025, 3, 15), current, CALENDAR)
    with pytest.raises(DomainError) as error:
        extend(first, extra, "needs more time", CALENDAR)
    assert violation(error) == "extra_working_days"


def test_extension_to_exactly_ninety_working_days() -> None:
    first = deadline(at(2025, 3, 15), 15, CALENDAR)
    assert extend(first, 75, "complex request", CALENDAR).working_days == 90


def test_overdue_from_the_start_of_the_next_day_in_shanghai() -> None:
    result = deadline(at(2025, 3, 15), 15, CALENDAR)  # due Apr 7
    assert not is_overdue(result, at(2025, 4, 7, 23).replace(minute=59, second=59))
    assert is_overdue(result, datetime(2025, 4, 8, tzinfo=ZONE))
    assert not is_overdue(result, datetime(2025, 4, 7, 15, 59, 59, tzinfo=UTC))
    assert is_overdue(result, datetime(2025, 4, 7, 16, 0, tzinfo=UTC))
    assert not is_overdue(result, at(2025, 3, 15))


def test_extension_clears_overdue() -> None:
    first = deadline(at(2025, 3, 15), 15, CALENDAR)
    now = at(2025, 4, 9)
    assert is_overdue(first, now)
    assert not is_overdue(extend(first, 15, "needs more time", CALENDAR), now)


# -- overrides ------------------------------------------------------------------------------


def test_override_adds_a_holiday() -> None:
    calendar = WorkingCalendar(CalendarOverrides(holidays=frozenset({date(2025, 3, 18)})))
    assert not calendar.is_working_day(date(2025, 3, 18))
    assert deadline(at(2025, 3, 15), 15, calendar).due_date == date(2025, 4, 8)


def test_override_adds_a_make_up_working_day() -> None:
    calendar = WorkingCalendar(CalendarOverrides(working_days=frozenset({date(2025, 3, 22)})))
    assert calendar.is_working_day(date(2025, 3, 22))
    assert deadline(at(2025, 3, 15), 15, calendar).due_date == date(2025, 4, 3)


def test_override_working_day_wins_over_a_package_holiday() -> None:
    calendar = WorkingCalendar(parse_overrides({"working_days": ["2025-04-04"]}))
    assert deadline(at(2025, 3, 15), 15, calendar).due_date == date(2025, 4, 4)


def test_overrides_from_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(
        "official_years = [2027]\nholidays = [2025-03-18]\nworking_days = ['2025-03-22']\n",
        encoding="utf-8",
    )
    assert load_overrides(path) == CalendarOverrides(
        holidays=frozenset({date(2025, 3, 18)}),
        working_days=frozenset({date(2025, 3, 22)}),
        official_years=frozenset({2027}),
    )


def test_example_overrides_file_parses() -> None:
    assert load_overrides(EXAMPLE_FILE) == CalendarOverrides()


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"holiday": []}, "holiday"),
        ({"holidays": "2025-03-18"}, "holidays"),
        ({"holidays": ["2025-3-18"]}, "holidays[0]"),
        ({"holidays": ["20250318"]}, "holidays[0]"),
        ({"holidays": ["2025-02-30"]}, "holidays[0]"),
        ({"holidays": ["2025-03-18T00:00:00"]}, "holidays[0]"),
        ({"holidays": [datetime(2025, 3, 18)]}, "holidays[0]"),
        ({"holidays": [20250318]}, "holidays[0]"),
        ({"working_days": [date(2025, 3, 22), "2025-03-22"]}, "working_days"),
        ({"holidays": ["2025-03-22"], "working_days": ["2025-03-22"]}, "holidays"),
        ({"holidays": ["2000-03-22"]}, "holidays[0]"),
        ({"official_years": [True]}, "official_years[0]"),
        ({"official_years": ["2027"]}, "official_years[0]"),
        ({"official_years": [2100]}, "official_years[0]"),
        ({"official_years": [2027, 2027]}, "official_years"),
        ({"holidays": ["2025-01-01"] * 1001}, "holidays"),
    ],
)
def test_malformed_overrides_are_rejected(doc: dict[str, object], path: str) -> None:
    with pytest.raises(CalendarError) as error:
        parse_overrides(doc)
    assert error.value.path == path


@pytest.mark.parametrize(
    "text",
    [
        "holidays = [2027-02-30]\n",  # no such day
        "holidays = [2027-02-11\n",
        "holidays = [2027-02-11T08:00:00]\n",
        "working_days = [2027-02-11]\nworking_days = []\n",
    ],
)
def test_malformed_override_files_are_rejected(tmp_path: Path, text: str) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CalendarError):
        load_overrides(path)


def test_missing_and_oversized_override_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(CalendarError, match="cannot be read"):
        load_overrides(tmp_path / "absent.toml")
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * 70_000 + "\n", encoding="utf-8")
    with pytest.raises(CalendarError, match="at most"):
        load_overrides(big)


def settings_calendar(env: dict[str, str]) -> WorkingCalendar:
    """The calendar the privacy service builds from these variables."""
    return load_calendar(privacy_settings.load(load_settings(env)).calendar_overrides)


def test_the_settings_calendar_reads_the_overrides_named_by_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "calendar.toml"
    path.write_text("holidays = [2025-03-18]\n", encoding="utf-8")
    calendar = settings_calendar({privacy_settings.CALENDAR_OVERRIDES_ENV: str(path)})
    assert deadline(at(2025, 3, 15), calendar=calendar).due_date == date(2025, 4, 8)


def test_the_calendar_without_overrides() -> None:
    assert deadline(at(2025, 3, 15)).due_date == date(2025, 4, 7)
    calendar = settings_calendar({privacy_settings.CALENDAR_OVERRIDES_ENV: ""})
    assert deadline(at(2025, 3, 15), calendar=calendar).due_date == date(2025, 4, 7)
    assert calendar.overrides == CalendarOverrides()


# -- provisional ----------------------------------------------------------------------------


def test_deadline_within_a_published_year_is_not_provisional() -> None:
    assert not deadline(at(2026, 11, 2), 15, CALENDAR).provisional


def test_deadline_reaching_a_year_known_only_by_rule_is_provisional() -> None:
    # 2027 has no published schedule in the package: its days off are derived by rule
    result = deadline(at(2026, 12, 15), 15, CALENDAR)
    assert result.due_date.year == 2027
    assert result.provisional
    assert deadline(at(2027, 3, 1), 15, CALENDAR).provisional


def test_deadline_in_late_december_depends_on_next_years_schedule() -> None:
    # New Year's make-up working days have fallen on Dec 29-31 of the year before
    result = deadline(at(2026, 12, 1), 15, CALENDAR)
    assert result.due_date == date(2026, 12, 22)
    assert result.provisional
    assert not deadline(at(2026, 11, 20), 15, CALENDAR).provisional  # due Dec 11


def test_override_file_makes_a_year_official() -> None:
    calendar = WorkingCalendar(parse_overrides({"official_years": [2027]}))
    assert calendar.is_official(2027)
    assert not deadline(at(2026, 12, 15), 15, calendar).provisional
    assert deadline(at(2027, 12, 10), 15, calendar).provisional  # 2028 is still unknown


def test_extension_into_an_unknown_year_becomes_provisional() -> None:
    first = deadline(at(2026, 11, 2), 15, CALENDAR)
    assert not first.provisional
    assert extend(first, 30, "needs more time", CALENDAR).provisional


# -- rejected arguments ---------------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    with pytest.raises(DomainError) as error:
        deadline(datetime(2025, 3, 15, 10), 15, CALENDAR)
    assert violation(error) == "received_at"
    result = deadline(at(2025, 3, 15), 15, CALENDAR)
    with pytest.raises(DomainError) as error:
        is_overdue(result, datetime(2025, 4, 9))
    assert violation(error) == "now"


@pytest.mark.parametrize("working_days", [0, -1, 91, True])
def test_working_days_out_of_bounds(working_days: int) -> None:
    with pytest.raises(DomainError) as error:
        deadline(at(2025, 3, 15), working_days, CALENDAR)
    assert violation(error) == "working_days"


def test_working_days_bounds_are_inclusive() -> None:
    assert deadline(at(2025, 3, 15), 1, CALENDAR).working_days == 1
    assert deadline(at(2025, 3, 15), 90, CALENDAR).working_days == 90


@pytest.mark.parametrize("received", [at(2000, 12, 31), at(2100, 1, 4)])
def test_years_outside_the_calendar_are_rejected(received: datetime) -> None:
    with pytest.raises(DomainError) as error:
        deadline(received, 15, CALENDAR)
    assert violation(error) == "received_at"


def test_last_supported_year_reaches_into_the_next() -> None:
    result = deadline(at(2099, 12, 31), 90, CALENDAR)
    assert result.due_date.year == 2100
    assert result.provisional


# -- properties -----------------------------------------------------------------------------

received_ats = st.datetimes(
    min_value=datetime(2001, 1, 2),
    max_value=datetime(2099, 12, 30),
    timezones=st.sampled_from([UTC, ZONE, ZoneInfo("America/New_York")]),
)
counts = st.integers(min_value=1, max_value=90)


@given(received_ats, counts)
def test_due_date_is_the_nth_working_day_after_receipt(received: datetime, n: int) -> None:
    result = deadline(received, n, CALENDAR)
    assert CALENDAR.is_working_day(result.due_date)
    assert result.due_date > result.received_on
    # cross-check with the package's own helpers, which see no overrides here
    assert result.due_date == CHINA.get_nth_working_day(result.received_on, n)
    first_counted = result.received_on + timedelta(days=1)
    assert CHINA.get_working_days_count(first_counted, result.due_date) == n


@given(received_ats, counts, counts)
def test_more_working_days_never_give_an_earlier_deadline(
    received: datetime, a: int, b: int
) -> None:
    low, high = sorted((a, b))
    assert due_date(received, low) <= due_date(received, high)
    if low < high:
        assert due_date(received, low) < due_date(received, high)


@given(received_ats, st.integers(1, 45), st.integers(1, 45))
def test_extending_equals_counting_the_total(received: datetime, a: int, b: int) -> None:
    extended = extend(deadline(received, a, CALENDAR), b, "needs more time", CALENDAR)
    direct = deadline(received, a + b, CALENDAR)
    assert (extended.due_date, extended.due, extended.provisional) == (
        direct.due_date,
        direct.due,
        direct.provisional,
    )
