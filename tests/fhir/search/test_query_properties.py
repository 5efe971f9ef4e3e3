"""Properties of the search parser: date ranges, number ranges, escaping, and robustness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ehr.errors import EhrError
from ehr.fhir.search.model import DateQuery, NumberQuery, TokenQuery
from tests.fhir.search.test_query import TABLE, one, search

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# strftime formats for each precision a search date can have (search.html#date)
PRECISIONS = ["%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f"]
VALUE_TEXT = st.text(alphabet=st.sampled_from("ab ,$|\\é"), max_size=12)


def escape(value: str) -> str:
    for char in "\\,$|":
        value = value.replace(char, "\\" + char)
    return value


def formatted(instant: datetime, precision: str) -> str:
    return instant.strftime(precision.replace("%Y", f"{instant.year:04d}"))  # glibc does not pad %Y


def date_of(value: str) -> DateQuery:
    (date,) = one("Patient", "birthdate", value).values
    assert isinstance(date, DateQuery)
    return date


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)), st.sampled_from(PRECISIONS))
def test_a_date_is_the_range_of_its_precision(moment: datetime, precision: str) -> None:
    text = formatted(moment, precision)
    date = date_of(text)
    assert date.low_us < date.high_us
    low = EPOCH + timedelta(microseconds=date.low_us)
    last = EPOCH + timedelta(microseconds=date.high_us - 1)
    assert formatted(low, precision) == text == formatted(last, precision)


@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
    st.sampled_from(PRECISIONS[3:]),
)
def test_an_offset_shifts_the_range(moment: datetime, minutes: int, precision: str) -> None:
    text = formatted(moment, precision)
    zone = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    shifted, plain = date_of(text + zone), date_of(text + "Z")
    assert shifted.low_us == plain.low_us - minutes * 60_000_000
    assert shifted.high_us - shifted.low_us == plain.high_us - plain.low_us


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12))
def test_a_number_is_half_a_unit_either_side(value: Decimal) -> None:
    (number,) = one("RiskAssessment", "probability", str(value)).values
    assert isinstance(number, NumberQuery)
    assert number.low < number.value < number.high
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    assert number.value - number.low == number.high - number.value == Decimal(5) * Decimal(10) ** (exponent - 1)


@given(st.lists(VALUE_TEXT.filter(bool), min_size=1, max_size=8))
def test_escaped_values_round_trip_through_or(values: list[str]) -> None:
    assert one("Patient", "name", ",".join(escape(v) for v in values)).values == tuple(values)


@given(VALUE_TEXT.filter(bool), VALUE_TEXT.filter(bool))
def test_escaped_token_parts_round_trip(system: str, code: str) -> None:
    assert one("Patient", "identifier", f"{escape(system)}|{escape(code)}").values == (TokenQuery(system, code),)


KEYS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(sorted({code for table in TABLE.values() for code in table})).flatmap(
        lambda code: st.sampled_from([code, f"{code}:", f"{code}:missing", f"{code}:Patient.name", f"{code}.name"])
    ),
    st.sampled_from(["_has:Observation:patient:code", "_include", "_sort", "_count", "_summary", "_has:"]),
)


@given(
    st.sampled_from([None, *sorted(TABLE)]),
    st.lists(st.tuples(KEYS, st.text(max_size=40)), max_size=6),
    st.booleans(),
)
def test_parse_raises_only_ehr_errors(resource_type: str | None, pairs: list[tuple[str, str]], strict: bool) -> None:
    try:
        search(resource_type, *pairs, strict=strict)
    except EhrError:
        pass
