"""Extraction over the official R4 material raises nothing and finds what the examples hold;
properties over generated values."""

from __future__ import annotations

import json
import tarfile
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr.fhir.search.extract import extract, patient_compartment
from ehr.fhir.search.values import DateValue, NumberValue, QuantityValue
from tests.fhir.shared import CONFORMANCE, R4_PACKAGE, load_json, require

EXAMPLES = CONFORMANCE / "fhir-examples"
OFFICIAL = sorted(EXAMPLES.glob("*.json")) if EXAMPLES.is_dir() else []


@pytest.mark.parametrize("path", OFFICIAL or [EXAMPLES], ids=lambda path: path.name)
def test_every_official_example_extracts(path: Path) -> None:
    resource = load_json(require(path))
    assert isinstance(resource, dict)
    found = extract(resource)
    assert ("_id", found[0][1]) == found[0]  # every example has an id, the first code in order
    assert all(value.low_us < value.high_us for _, value in found if isinstance(value, DateValue))
    patient_compartment(resource)


def test_the_official_examples_are_all_there() -> None:
    require(EXAMPLES)
    assert len(OFFICIAL) >= 91


def test_the_official_patient_example() -> None:
    resource = load_json(require(EXAMPLES / "Patient-example.json"))
    assert isinstance(resource, dict)
    codes = {code for code, _ in extract(resource)}
    assert {"_id", "name", "family", "given", "birthdate", "gender", "identifier", "phone", "address-city",
            "organization", "active"} <= codes
    assert patient_compartment(resource) == {"example"}


def test_every_resource_of_the_core_package_extracts() -> None:
    count = 0
    with tarfile.open(require(R4_PACKAGE), "r:gz") as archive:
        for member in archive:
            name = member.name.removeprefix("package/")
            handle = archive.extractfile(member)
            if "/" in name or not name.endswith(".json") or name.startswith(".") or handle is None:
                continue
            if name != "package.json":
                extract(json.load(handle, parse_float=Decimal))
                count += 1
    assert count > 4500


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_indexes_exactly_as_written(number: Decimal) -> None:
    assessment = {"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": number}]}
    [(_, value)] = [(c, v) for c, v in extract(assessment) if c == "probability"]
    assert isinstance(value, NumberValue) and str(value.value) == str(number)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_from_another_parser_indexes_as_its_shortest_repr(number: float) -> None:
    invoice = {"resourceType": "Invoice", "totalNet": {"value": number, "currency": "USD"}}
    [(_, value)] = [(c, v) for c, v in extract(invoice) if c == "totalnet"]
    assert isinstance(value, QuantityValue) and value.value == Decimal(repr(number)) and float(value.value) == number
