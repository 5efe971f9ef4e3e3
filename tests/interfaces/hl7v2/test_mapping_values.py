"""OBX value types, reference ranges, escapes and times, on small hand-written ORU^R01 messages."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from interfaces.hl7v2.mapping import to_transaction
from interfaces.hl7v2.mapping.datatypes import date_time
from interfaces.hl7v2.mapping.segments import Delimiters, escape, unescape
from interfaces.hl7v2.message import parse
from tests.interfaces.hl7v2.mapping_helpers import assert_valid, resources

HEAD = (
    "MSH|^~\\&|LAB|ACME|EHR|HOSP|20260101120000||ORU^R01|C1|P|2.5.1\r"
    "PID|1||123^^^ACME^MR||DOE^JANE\r"
    "OBR|1||F1|718-7^Hemoglobin^LN|||20260101083000\r"
)


def _observation(obx: str, zone: Any = UTC) -> dict[str, Any]:
    bundle = to_transaction(parse((HEAD + obx + "\rZOB|whatever\r").encode()), zone=zone)
    assert_valid(bundle)
    found: dict[str, Any] = resources(bundle, "Observation")[0]
    return found


@pytest.mark.parametrize(("obx", "key", "value"), [
    ("OBX|1|SN|1^X^LN||<^10|mg^^UCUM|||||F", "valueQuantity",
     {"value": Decimal(10), "comparator": "<", "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}),
    ("OBX|1|SN|1^X^LN||^1^:^128||||||F", "valueRatio", {"numerator": {"value": Decimal(1)},
                                                       "denominator": {"value": Decimal(128)}}),
    ("OBX|1|SN|1^X^LN||^2^-^5|mL|||||F", "valueRange",
     {"low": {"value": Decimal(2), "unit": "mL"}, "high": {"value": Decimal(5), "unit": "mL"}}),
    ("OBX|1|SN|1^X^LN||<>^5||||||F", "valueString", "<> 5"),
    ("OBX|1|CWE|1^X^LN||260385009^Negative^SCT^NEG^neg^L||||||F", "valueCodeableConcept", {"coding": [
        {"system": "http://snomed.info/sct", "code": "260385009", "display": "Negative"},
        {"system": "urn:ehr:hl7v2:codesystem:L", "code": "NEG", "display": "neg"}], "text": "Negative"}),
    ("OBX|1|DT|1^X^LN||20250230||||||F", None, None),
    ("OBX|1|DTM|1^X^LN||202501021530||||||F", "valueDateTime", "2025-01-02T15:30:00+00:00"),
    ("OBX|1|TS|1^X^LN||20250102153045.12+0100||||||F", "valueDateTime", "2025-01-02T15:30:45.12+01:00"),
    ("OBX|1|TM|1^X^LN||0930||||||F", "valueTime", "09:30:00"),
    ("OBX|1|NR|1^X^LN||1.5^3||||||F", "valueRange", {"low": {"value": Decimal("1.5")}, "high": {"value": Decimal(3)}}),
    ("OBX|1|FT|1^X^LN||line one\\.br\\line two~line three||||||F", "valueString", "line one\nline two\nline three"),
    ("OBX|1|ST|1^X^LN||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f \\X4F4B\\||||||F", "valueString", "a|b^c&d~e\\f OK"),
    ("OBX|1|NM|1^X^LN||-007.50||||||F", "valueQuantity", {"value": Decimal("-7.50")}),
])
def test_value_types(obx: str, key: str | None, value: Any) -> None:
    if key is None:
        with pytest.raises(Exception):  # noqa: B017 - Rejected, checked in test_mapping_errors
            _observation(obx)
        return
    assert _observation(obx)[key] == value


@pytest.mark.parametrize(("text", "expected"), [
    ("3.5-5.0", {"low": Decimal("3.5"), "high": Decimal("5.0")}),
    ("<10", {"high": Decimal(10)}),
    (">2", {"low": Decimal(2)}),
    ("negative", {}),
])
def test_reference_range(text: str, expected: dict[str, Decimal]) -> None:
    found = _observation(f"OBX|1|NM|1^X^LN||4|mmol/L^^UCUM|{text}|H~A|||F")
    limits = {k: v["value"] for k, v in found["referenceRange"][0].items() if k in ("low", "high")}
    assert limits == expected and found["referenceRange"][0]["text"] == text
    assert [i["coding"][0]["code"] for i in found["interpretation"]] == ["H", "A"]


def test_effective_falls_back_to_obr7_in_the_senders_zone() -> None:
    found = _observation("OBX|1|NM|1^X^LN||4||||||F", zone=ZoneInfo("America/New_York"))
    assert found["effectiveDateTime"] == "2026-01-01T08:30:00-05:00"


def test_summer_time_offset() -> None:
    assert date_time("202507011200", ZoneInfo("America/New_York")) == "2025-07-01T12:00:00-04:00"
    assert date_time("2025", UTC) == "2025" and date_time("202507", UTC) == "2025-07"


@pytest.mark.parametrize("bad", ["Aug 15, 1942", "196203520", "20251301", "2025010225", "20250102+2500"])
def test_not_a_dtm(bad: str) -> None:
    with pytest.raises(ValueError):
        date_time(bad, UTC)


def test_escape_round_trip_and_unknown_sequences() -> None:
    d = Delimiters()
    text = "a|b^c&d~e\\f\ng"
    assert unescape(escape(text, d), d) == text
    assert unescape("\\H\\bold\\N\\ \\Zlocal\\ \\unterminated", d) == "bold \\Zlocal\\ \\unterminated"


def test_order_without_filler_number_is_created() -> None:
    raw = (HEAD.replace("OBR|1||F1|", "OBR|1|P9^ORD||") + "OBX|1|NM|1^X^LN||4||||||F\r").encode()
    bundle = to_transaction(parse(raw), zone=UTC)
    assert [e["request"]["method"] for e in bundle["entry"]] == ["POST", "POST", "POST"]
    report = resources(bundle, "DiagnosticReport")[0]
    assert report["identifier"][0]["value"] == "P9" and report["status"] == "unknown"
