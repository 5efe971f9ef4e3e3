"""Parsing AuditEvent search parameters (no database): dates as ranges, prefixes, tokens, references,
escaping, cursors and limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr.audit.search_params import (
    Entity,
    Match,
    Paging,
    Period,
    Position,
    date_range,
    decode_cursor,
    encode_cursor,
    parse_access_log,
    parse_search,
)
from ehr.errors import EhrError

PAGING = Paging(10, 100)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(*parts: int) -> int:
    return (datetime(*parts, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)  # type: ignore[arg-type,misc]


def criteria(*params: tuple[str, str]) -> list[tuple[object, ...]]:
    return list(parse_search(list(params), lenient=False, paging=PAGING).criteria)


RANGES = [
    ("2026", us(2026, 1, 1), us(2027, 1, 1)),
    ("2024-02", us(2024, 2, 1), us(2024, 3, 1)),  # a leap February
    ("2026-12", us(2026, 12, 1), us(2027, 1, 1)),
    ("2026-11-23", us(2026, 11, 23), us(2026, 11, 24)),
    ("2026-11-23T10:00Z", us(2026, 11, 23, 10), us(2026, 11, 23, 10, 1)),
    ("2026-11-23T10:00:05Z", us(2026, 11, 23, 10, 0, 5), us(2026, 11, 23, 10, 0, 6)),
    ("2026-11-23T10:00:05.5Z", us(2026, 11, 23, 10, 0, 5, 500_000), us(2026, 11, 23, 10, 0, 5, 600_000)),
    ("2026-11-23T10:00:05.123456Z", us(2026, 11, 23, 10, 0, 5, 123_456), us(2026, 11, 23, 10, 0, 5, 123_457)),
    ("2026-11-23T10:00:05.123456789Z", us(2026, 11, 23, 10, 0, 5, 123_456), us(2026, 11, 23, 10, 0, 5, 123_457)),
    ("2026-11-23T10:00:00+05:30", us(2026, 11, 23, 4, 30), us(2026, 11, 23, 4, 30, 1)),
    ("2026-11-23T23:00:00-02:00", us(2026, 11, 24, 1), us(2026, 11, 24, 1, 0, 1)),
    ("9999", us(9999, 1, 1), us(9999, 12, 31) + 86_400_000_000),
    ("1969-12-31", -86_400_000_000, 0),
]


@pytest.mark.parametrize(("text", "low", "high"), RANGES, ids=[r[0] for r in RANGES])
def test_a_date_is_the_range_of_its_precision(text: str, low: int, high: int) -> None:
    assert date_range("date", text) == (low, high)


@pytest.mark.parametrize("text", ["2026-00", "2026-02-29", "2026-11-23T10:00:00", "2026-11-23T24:00:00Z",
                                  "2026-11-23T10:60:00Z", "2026-11-23T10:00:60Z", "2026-11-23T10:00+15:00",
                                  "0000", "26", "2026-1-2", "2026-11-23 10:00:00Z", "2026-11-23T10Z", ""])
def test_not_a_date(text: str) -> None:
    with pytest.raises(EhrError) as caught:
        date_range("date", text)
    assert caught.value.category.status == 400


DAY = (us(2026, 11, 23), us(2026, 11, 24))
PREFIXES = [
    ("", Period(*DAY)),
    ("eq", Period(*DAY)),
    ("ne", Period(*DAY, outside=True)),
    ("lt", Period(None, DAY[0])),
    ("eb", Period(None, DAY[0])),
    ("le", Period(None, DAY[1])),
    ("gt", Period(DAY[1], None)),
    ("sa", Period(DAY[1], None)),
    ("ge", Period(DAY[0], None)),
]


@pytest.mark.parametrize(("prefix", "period"), PREFIXES, ids=[p[0] or "none" for p in PREFIXES])
def test_prefixes(prefix: str, period: Period) -> None:
    assert criteria(("date", f"{prefix}2026-11-23")) == [(period,)]


def test_ap_is_refused() -> None:
    with pytest.raises(EhrError, match="ap prefix"):
        criteria(("date", "ap2026"))


def test_tokens_and_references() -> None:
    assert criteria(("action", "C,http://hl7.org/fhir/audit-event-action|D,urn:x|E")) == [
        (Match("action", ("C",)), Match("action", ("D",)), Match("action", ()))
    ]
    assert criteria(("agent", "a1,Device/a2,https://x.org/fhir/Practitioner/a3")) == [
        (Match("agent", ("a1",)), Match("agent", ("a2",)), Match("agent", ("a3",)))
    ]
    assert criteria(("entity", "Observation/o1/_history/3"), ("entity", "o2")) == [
        (Entity("Observation", "o1"),), (Entity(None, "o2"),)
    ]
    assert criteria(("patient", "Patient/" + "p" * 80)) == [(Match("patient", ("p" * 64,)),)]  # as stored


def test_escaped_separators_are_values() -> None:
    assert criteria(("address", r"a\,b,c")) == [(Match("address", ("a,b",)), Match("address", ("c",)))]
    assert criteria(("subtype", r"x\|y")) == [(Match("subtype", ("x|y",)),)]


def test_access_log_is_confined_to_the_patient() -> None:
    query = parse_access_log("p1", [("start", "2026"), ("end", "2026")], lenient=False, paging=PAGING)
    assert query.criteria == (
        (Match("patient", ("p1",)),),
        (Period(us(2026, 1, 1), None),),
        (Period(None, us(2027, 1, 1)),),
    )
    assert query.applied == (("start", "2026"), ("end", "2026"))


def test_count_and_cursor() -> None:
    cursor = encode_cursor(Position(5, 7))
    query = parse_search([("_count", "500"), ("_cursor", cursor), ("patient", "x")], lenient=False, paging=PAGING)
    assert (query.count, query.after, query.applied) == (100, Position(5, 7), (("patient", "x"),))
    assert parse_search([], lenient=False, paging=PAGING).count == 10
    assert parse_search([("_count", "0")], lenient=False, paging=PAGING).count == 0


FOREIGN = ["", "!!", "WzEsICJ4Il0", "eyJhIjogMX0", "WzEuNSwgMl0", "WzEsIDIsIDNd", "W3RydWUsIDFd",
           encode_cursor(Position(2**63, 1))]


@pytest.mark.parametrize("token", FOREIGN)
def test_foreign_cursors_are_refused(token: str) -> None:
    with pytest.raises(EhrError, match="_cursor"):
        decode_cursor(token)


def test_limits() -> None:
    with pytest.raises(EhrError, match="at most"):
        parse_search([("patient", "x")] * 51, lenient=False, paging=PAGING)
    with pytest.raises(EhrError, match="at most"):
        parse_search([("patient", ",".join(["x"] * 51))], lenient=False, paging=PAGING)


def test_lenient_skips_unknown_names_only() -> None:
    query = parse_search([("foo", "1"), ("_summary", "true"), ("action", "R")], lenient=True, paging=PAGING)
    assert query.applied == (("action", "R"),)
    with pytest.raises(EhrError, match="modifiers"):
        parse_search([("action:not", "R")], lenient=True, paging=PAGING)


@given(st.integers(min_value=-(2**62), max_value=2**62), st.integers(min_value=0, max_value=2**62))
def test_cursor_round_trip(recorded_us: int, seq: int) -> None:
    assert decode_cursor(encode_cursor(Position(recorded_us, seq))) == Position(recorded_us, seq)


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_every_precision_contains_the_instant(moment: datetime) -> None:
    exact = (moment.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    iso = moment.isoformat(timespec="microseconds")
    texts = [iso[:4], iso[:7], iso[:10], iso[:16] + "Z", iso[:19] + "Z", iso + "Z"]
    for text in texts:
        low, high = date_range("date", text)
        assert low <= exact < high, text
    assert date_range("date", texts[-1]) == (exact, exact + 1)
