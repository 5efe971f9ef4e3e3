"""FHIR date, dateTime and instant values as the half-open UTC range their precision covers.

R4 search.html#date: "the precision of the value is the range": ``2020`` is the whole year,
``2020-03-01T10:00`` the whole minute, ``...:00.25`` a hundredth of a second. Offsets are
applied; a value without one (a date, or a dateTime against the R4 regex) is taken as UTC.
Years are clamped to 0001..9999, so every range fits well inside ``MIN_US``..``MAX_US``.
"""

from __future__ import annotations

import functools
import re
from datetime import date

__all__ = ["date_range"]

_EPOCH = date(1970, 1, 1).toordinal()
_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DAY_US = 86_400_000_000
_VALUE = re.compile(
    r"(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?(Z|[+-]\d\d:\d\d)?)?)?)?"
)


@functools.lru_cache(maxsize=4096)
def date_range(text: str) -> tuple[int, int] | None:
    """``[low, high)`` in microseconds since the epoch, or None when ``text`` is not a date.
    Cached: imports repeat the same dates (birth dates, effective times) many times."""
    match = _VALUE.fullmatch(text)
    if match is None:
        return None
    year_text, month_text, day_text, hour, minute, second, fraction, zone = match.groups()
    year = min(max(int(year_text), 1), 9999)
    if month_text is None:
        return _days(year, 1, 1), _days(year, 12, 31) + _DAY_US
    month = int(month_text)
    if not 1 <= month <= 12:
        return None
    length = _month_length(year, month)
    if day_text is None:
        low = _days(year, month, 1)
        return low, low + length * _DAY_US
    day = int(day_text)
    if not 1 <= day <= length:
        return None
    low = _days(year, month, day)
    if hour is None:
        return low, low + _DAY_US
    return _time(low, hour, minute, second, fraction, zone)


def _month_length(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return _MONTH_DAYS[month - 1]


def _days(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - _EPOCH) * _DAY_US


def _time(day_us: int, hour: str, minute: str, second: str | None, fraction: str | None,
          zone: str | None) -> tuple[int, int] | None:
    if hour > "23" or minute > "59" or (second is not None and second > "60"):
        return None
    if zone is not None and zone != "Z" and (zone[1:3] > "14" or zone[4:6] > "59"):
        return None
    seconds = int(hour) * 3600 + int(minute) * 60 + int(second or 0) - _offset(zone)
    low = day_us + seconds * 1_000_000
    if second is None:
        return low, low + 60_000_000
    if fraction is None:
        return low, low + 1_000_000
    digits = fraction[:6]
    return low + int(digits.ljust(6, "0")), low + int(digits.ljust(6, "0")) + 10 ** (6 - len(digits))


def _offset(zone: str | None) -> int:
    """Seconds east of UTC."""
    if zone is None or zone == "Z":
        return 0
    sign = -1 if zone[0] == "-" else 1
    return sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
