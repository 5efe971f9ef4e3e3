"""Dates index as the range their precision covers, in UTC microseconds (R4 search.html#date)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr.fhir.search.dates import date_range
from ehr.fhir.search.values import MAX_US, MIN_US

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECOND = 1_000_000
DAY = 86_400 * SECOND


def iso(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.ffffff`` (strftime does not pad years before 1000 everywhere)."""
    return f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond:06d}"


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> int:
    """Microseconds since the epoch of a UTC date and time."""
    moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


@pytest.mark.parametrize(("text", "low", "high"), [
    ("2020", us(2020, 1, 1), us(2021, 1, 1)),
    ("2020-02", us(2020, 2, 1), us(2020, 2, 1) + 29 * DAY),            # leap year
    ("2021-02", us(2021, 2, 1), us(2021, 2, 1) + 28 * DAY),
    ("1900-02", us(1900, 2, 1), us(1900, 2, 1) + 28 * DAY),            # divisible by 100: not leap
    ("2000-02", us(2000, 2, 1), us(2000, 2, 1) + 29 * DAY),            # divisible by 400: leap
    ("2020-12", us(2020, 12, 1), us(2021, 1, 1)),
    ("2020-02-29", us(2020, 2, 29), us(2020, 3, 1)),
    ("2020-03-01T10:30+02:00", us(2020, 3, 1, 8, 30), us(2020, 3, 1, 8, 31)),
    ("2020-03-01T10:30:15+02:00", us(2020, 3, 1, 8, 30, 15), us(2020, 3, 1, 8, 30, 16)),
    ("2020-03-01T10:30:15Z", us(2020, 3, 1, 10, 30, 15), us(2020, 3, 1, 10, 30, 16)),
    ("2020-03-01T10:30:15", us(2020, 3, 1, 10, 30, 15), us(2020, 3, 1, 10, 30, 16)),   # no offset: UTC
    ("2020-03-01T20:30:15.25-05:00", us(2020, 3, 2, 1, 30, 15, 250_000), us(2020, 3, 2, 1, 30, 15, 260_000)),
    ("2020-03-01T10:30:15.123456789Z", us(2020, 3, 1, 10, 30, 15, 123_456), us(2020, 3, 1, 10, 30, 15, 123_457)),
    ("2020-01-01T00:30:00+14:00", us(2019, 12, 31, 10, 30), us(2019, 12, 31, 10, 30, 1)),
    ("0001-01-01T00:00:00+14:00", us(1, 1, 1) - 14 * 3600 * SECOND, us(1, 1, 1) - 14 * 3600 * SECOND + SECOND),
    ("0000", us(1, 1, 1), us(2, 1, 1)),                                # clamped to year 1
    ("9999-12-31T23:59:59-14:00", us(9999, 12, 31, 23, 59, 59) + 14 * 3600 * SECOND,
     us(9999, 12, 31, 23, 59, 59) + 14 * 3600 * SECOND + SECOND),
])
def test_a_value_covers_its_precision(text: str, low: int, high: int) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize("text", [
    "2021-02-29", "1900-02-29", "2020-04-31", "2020-13", "2020-00", "2020-01-00", "2020-01-01T24:00:00Z",
    "2020-01-01T10:60:00Z", "20", "tomorrow", "2020-01-01T10", "2020-1-1", " 2020",
])
def test_what_is_not_a_date_has_no_range(text: str) -> None:
    assert date_range(text) is None


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_a_microsecond_instant_is_its_own_one_microsecond_range(moment: datetime, minutes: int) -> None:
    offset = timezone(timedelta(minutes=minutes))
    aware = moment.replace(tzinfo=offset)
    sign, rest = ("-" if minutes < 0 else "+"), abs(minutes)
    text = f"{iso(moment)}{sign}{rest // 60:02d}:{rest % 60:02d}"
    low = (aware - EPOCH) // timedelta(microseconds=1)
    assert date_range(text) == (low, low + 1)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.sampled_from([4, 7, 10, 16, 19, 21, 26]))
def test_every_value_lies_within_the_range_of_each_coarser_precision(moment: datetime, length: int) -> None:
    exact = date_range(f"{iso(moment)}Z")
    coarse = date_range(iso(moment)[:length] + ("Z" if length > 10 else ""))
    assert exact is not None and coarse is not None
    assert MIN_US < coarse[0] <= exact[0] < exact[1] <= coarse[1] < MAX_US


@given(st.text(max_size=40))
def test_no_text_makes_the_parser_raise(text: str) -> None:
    found = date_range(text)
    assert found is None or found[0] < found[1]
