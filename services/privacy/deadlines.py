"""The working calendar of data-subject-request deadlines as the settings name it: the
`holidays` package's China calendar with the operator's overrides file, read and validated
when the service builds (the counting rules are domain/deadlines.py)."""

from __future__ import annotations

from pathlib import Path

from services.privacy.domain.deadlines import (
    CalendarError,
    CalendarOverrides,
    WorkingCalendar,
    overrides_from_toml,
)


def load_overrides(path: Path) -> CalendarOverrides:
    """Read and validate a TOML overrides file; CalendarError if missing or malformed."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CalendarError(str(path), f"cannot be read: {error.strerror}") from None
    return overrides_from_toml(raw, str(path))


def load_calendar(overrides: Path | None) -> WorkingCalendar:
    """The calendar with the overrides file (settings.calendar_overrides), if any."""
    return WorkingCalendar(load_overrides(overrides) if overrides is not None else None)
