"""Property: random ORU^R01 messages (NM decimals, ST text needing escapes, CWE codes, units, several
OBX) round-trip their values into the Observations exactly, after unescaping."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from interfaces.hl7v2.mapping import to_transaction
from interfaces.hl7v2.mapping.segments import Delimiters, escape
from interfaces.hl7v2.message import parse
from tests.interfaces.hl7v2.mapping_helpers import assert_valid, resources

D = Delimiters()
_SAFE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"))
TEXT = st.text(_SAFE, min_size=1, max_size=40).map(str.strip).filter(bool)
SPECIAL = st.text(st.sampled_from(list("|^~\\&ab 1")), min_size=1, max_size=12).map(str.strip).filter(bool)
CODE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,9}", fullmatch=True)
NUMBER = st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**6, max_value=10**6)
UNIT = st.sampled_from(["mg/dL", "mmol/L", "%", "10*3/uL", "{cells}/uL"])

NM = st.tuples(st.just("NM"), NUMBER, UNIT)
ST = st.tuples(st.just("ST"), st.one_of(TEXT, SPECIAL), st.just(""))
CWE = st.tuples(st.just("CWE"), st.tuples(CODE, TEXT), st.just(""))
OBSERVATIONS = st.lists(st.one_of(NM, ST, CWE), min_size=1, max_size=6)


def _value(kind: str, value: object) -> str:
    if kind == "NM":
        return str(value)
    if kind == "ST":
        return escape(str(value), D)
    code, display = value  # type: ignore[misc]
    return f"{escape(code, D)}^{escape(display, D)}^LN"


def _message(observations: list[tuple[str, object, str]]) -> bytes:
    lines = ["MSH|^~\\&|LAB|ACME|EHR|HOSP|20260101120000||ORU^R01|P1|P|2.5.1",
             "PID|1||123^^^ACME^MR||DOE^JANE", "OBR|1||F1|718-7^Hemoglobin^LN|||20260101083000"]
    for n, (kind, value, unit) in enumerate(observations, 1):
        units = f"{unit}^^UCUM" if unit else ""
        lines.append(f"OBX|{n}|{kind}|{n}^Test {n}^LN||{_value(kind, value)}|{units}|||||F")
    return ("\r".join(lines) + "\r").encode()


@settings(max_examples=150, deadline=None)
@given(OBSERVATIONS)
def test_values_round_trip(observations: list[tuple[str, object, str]]) -> None:
    bundle = to_transaction(parse(_message(observations)), zone=UTC)
    assert_valid(bundle)
    mapped = resources(bundle, "Observation")
    assert len(mapped) == len(observations)
    for (kind, value, unit), found in zip(observations, mapped, strict=True):
        if kind == "NM":
            assert found["valueQuantity"] == {"value": Decimal(str(value)), "unit": unit,
                                              "system": "http://unitsofmeasure.org", "code": unit}
        elif kind == "ST":
            assert found["valueString"] == value
        else:
            code, display = value  # type: ignore[misc]
            assert found["valueCodeableConcept"]["coding"] == [
                {"system": "http://loinc.org", "code": code, "display": display}]
