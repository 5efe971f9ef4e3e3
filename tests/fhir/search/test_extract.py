"""What a resource is indexed under, shape by shape (R4 search.html), hand-checked."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from ehr.fhir.search.dates import date_range
from ehr.fhir.search.extract import Indexed, extract
from ehr.fhir.search.values import (
    MAX_US,
    MIN_US,
    CompositeValue,
    DateValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

Json = dict[str, Any]
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
WEIGHT = {"system": LOINC, "code": "29463-7", "display": "Body weight"}
KG = {"value": Decimal("72.50"), "unit": "kg", "system": UCUM, "code": "kg"}


def indexed(resource: Json, code: str) -> list[Indexed]:
    return [value for name, value in extract(resource) if name == code]


def day(text: str) -> DateValue:
    found = date_range(text)
    assert found is not None
    return DateValue(*found)


def observation(**elements: Any) -> Json:
    return {"resourceType": "Observation", "status": "final", "code": {"coding": [WEIGHT]}, **elements}


def test_human_name_indexes_each_part_once() -> None:
    patient = {"resourceType": "Patient", "name": [
        {"family": "Chalmers", "given": ["Peter", "James"], "prefix": ["Mr"], "suffix": ["III"],
         "text": "Peter Chalmers"},
        {"family": "Chalmers", "given": ["Jim"]},
    ]}
    assert indexed(patient, "name") == [StringValue(t) for t in
                                        ["Chalmers", "Peter Chalmers", "Peter", "James", "Mr", "III", "Jim"]]
    assert indexed(patient, "family") == [StringValue("Chalmers")]
    assert indexed(patient, "given") == [StringValue("Peter"), StringValue("James"), StringValue("Jim")]


def test_address_indexes_lines_and_parts() -> None:
    patient = {"resourceType": "Patient", "address": [
        {"use": "home", "line": ["534 Erewhon St", "Apt 2"], "city": "PleasantVille", "district": "Rainbow",
         "state": "Vic", "postalCode": "3999", "country": "AU", "text": "534 Erewhon St, PleasantVille"},
    ]}
    assert indexed(patient, "address") == [StringValue(t) for t in [
        "534 Erewhon St", "Apt 2", "PleasantVille", "Rainbow", "Vic", "3999", "AU", "534 Erewhon St, PleasantVille",
    ]]
    assert indexed(patient, "address-city") == [StringValue("PleasantVille")]
    assert indexed(patient, "address-use") == [TokenValue(None, "home")]


def test_telecom_by_system_and_identifier_and_primitives() -> None:
    patient = {"resourceType": "Patient", "id": "p1", "active": False, "gender": "female", "birthDate": "1974-12",
               "telecom": [{"system": "phone", "value": "555-1"}, {"system": "email", "value": "a@b.org"}],
               "identifier": [{"system": "urn:mrn", "value": "42", "type": {"text": "MRN"}}]}
    assert indexed(patient, "phone") == [TokenValue(None, "555-1")]
    assert indexed(patient, "email") == [TokenValue(None, "a@b.org")]
    assert indexed(patient, "telecom") == [TokenValue(None, "555-1"), TokenValue(None, "a@b.org")]
    assert indexed(patient, "identifier") == [TokenValue("urn:mrn", "42", "MRN")]
    assert indexed(patient, "active") == [TokenValue(None, "false")]
    assert indexed(patient, "gender") == [TokenValue(None, "female")]
    assert indexed(patient, "_id") == [TokenValue(None, "p1")]
    assert indexed(patient, "birthdate") == [day("1974-12")]


@pytest.mark.parametrize(("deceased", "token"), [
    ({}, "false"), ({"deceasedBoolean": True}, "true"), ({"deceasedDateTime": "2020-01-01"}, "true"),
])
def test_deceased_is_a_boolean_token(deceased: Json, token: str) -> None:
    assert indexed({"resourceType": "Patient", **deceased}, "deceased") == [TokenValue(None, token)]


def test_codeable_concept_codings_carry_the_concept_text_else_their_display() -> None:
    category = [{"coding": [{"system": "s", "code": "a", "display": "A"}], "text": "Cat"},
                {"coding": [{"system": "s", "code": "b", "display": "B"}]}, {"text": "only text"}]
    found = indexed(observation(category=category), "category")
    assert found == [TokenValue("s", "a", "Cat"), TokenValue("s", "b", "B"), TokenValue(None, None, "only text")]


def test_resource_level_parameters() -> None:
    meta = {"lastUpdated": "2024-05-01T10:00:00.123Z", "source": "urn:uuid:src",
            "profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"],
            "tag": [{"system": "http://t", "code": "x"}], "security": [{"system": "http://s", "code": "R"}]}
    basic = {"resourceType": "Basic", "id": "b1", "meta": meta, "code": {"text": "x"}}
    assert indexed(basic, "_id") == [TokenValue(None, "b1")]
    assert indexed(basic, "_lastUpdated") == [day("2024-05-01T10:00:00.123Z")]
    assert indexed(basic, "_profile") == [UriValue("http://hl7.org/fhir/StructureDefinition/vitalsigns")]
    assert indexed(basic, "_source") == [UriValue("urn:uuid:src")]
    assert indexed(basic, "_tag") == [TokenValue("http://t", "x")]
    assert indexed(basic, "_security") == [TokenValue("http://s", "R")]


def test_observation_quantity_value_and_its_composites() -> None:
    found = extract(observation(valueQuantity=KG))
    weight, kg = TokenValue(LOINC, "29463-7", "Body weight"), QuantityValue(Decimal("72.50"), UCUM, "kg", "kg")
    assert ("value-quantity", kg) in found and ("combo-value-quantity", kg) in found
    assert ("code-value-quantity", CompositeValue((weight, kg))) in found
    assert ("combo-code-value-quantity", CompositeValue((weight, kg))) in found
    assert not [code for code, _ in found if code in ("value-concept", "value-string", "value-date")]


def test_component_composites_pair_values_within_each_component() -> None:
    systolic, diastolic = {"system": LOINC, "code": "8480-6"}, {"system": LOINC, "code": "8462-4"}
    mmhg = {"unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}
    bp = observation(component=[{"code": {"coding": [systolic]}, "valueQuantity": {"value": 120, **mmhg}},
                                {"code": {"coding": [diastolic]}, "valueQuantity": {"value": 80, **mmhg}}])
    pairs = [value.parts for value in indexed(bp, "component-code-value-quantity") if isinstance(value, CompositeValue)]
    assert pairs == [
        (TokenValue(LOINC, "8480-6"), QuantityValue(Decimal(120), UCUM, "mm[Hg]", "mmHg")),
        (TokenValue(LOINC, "8462-4"), QuantityValue(Decimal(80), UCUM, "mm[Hg]", "mmHg")),
    ]
    assert indexed(bp, "code-value-quantity") == []  # the Observation itself has no value


@pytest.mark.parametrize(("element", "expected"), [
    ({"valueCodeableConcept": {"coding": [{"system": "s", "code": "pos"}], "text": "Positive"}},
     {"value-concept": [TokenValue("s", "pos", "Positive")], "value-string": [StringValue("Positive")]}),
    ({"valueString": "trace"}, {"value-string": [StringValue("trace")], "value-concept": []}),
    ({"valueDateTime": "2020-02"}, {"value-date": [day("2020-02")]}),
    ({"valuePeriod": {"start": "2020-02-01"}}, {"value-date": [DateValue(day("2020-02-01").low_us, MAX_US)]}),
    ({"valueBoolean": True}, {"value-concept": [], "value-string": [], "value-quantity": []}),
    ({"valueRange": {"low": {"value": 1}}}, {"value-quantity": []}),
])
def test_observation_value_variants(element: Json, expected: dict[str, list[Indexed]]) -> None:
    resource = observation(**element)
    assert {code: indexed(resource, code) for code in expected} == expected


def test_code_value_string_and_date_composites() -> None:
    weight = TokenValue(LOINC, "29463-7", "Body weight")
    assert indexed(observation(valueString="x"), "code-value-string") == [CompositeValue((weight, StringValue("x")))]
    assert indexed(observation(valueDateTime="2020"), "code-value-date") == [CompositeValue((weight, day("2020")))]


@pytest.mark.parametrize(("effective", "expected"), [
    ({"effectiveDateTime": "2020-01-01T10:00:00+01:00"}, day("2020-01-01T09:00:00Z")),
    ({"effectivePeriod": {"start": "2020-01-01", "end": "2020-01-02"}},
     DateValue(day("2020-01-01").low_us, day("2020-01-02").high_us)),
    ({"effectivePeriod": {"end": "2020"}}, DateValue(MIN_US, day("2020").high_us)),
    ({"effectiveInstant": "2020-01-01T00:00:00.5Z"}, day("2020-01-01T00:00:00.5Z")),
    ({"effectiveTiming": {"event": ["2020-03-05", "2020-01-01"]}},
     DateValue(day("2020-01-01").low_us, day("2020-03-05").high_us)),
])
def test_effective_in_every_form(effective: Json, expected: DateValue) -> None:
    assert indexed(observation(**effective), "date") == [expected]


def test_a_period_ending_before_it_starts_is_not_indexed() -> None:
    assert indexed(observation(effectivePeriod={"start": "2021", "end": "2020"}), "date") == []


def test_timing_indexes_its_outer_limits() -> None:
    timing = {"event": ["2020-06-01"], "repeat": {"boundsPeriod": {"start": "2020-01-01", "end": "2020-12-31"}}}
    request = {"resourceType": "ServiceRequest", "occurrenceTiming": timing}
    assert indexed(request, "occurrence") == [DateValue(day("2020-01-01").low_us, day("2020-12-31").high_us)]
    assert indexed({"resourceType": "ServiceRequest", "occurrenceTiming": {"code": {"text": "BID"}}},
                   "occurrence") == []


def test_a_string_is_a_date_only_when_it_reads_as_one() -> None:
    def plan(scheduled: str) -> Json:
        return {"resourceType": "CarePlan", "activity": [{"detail": {"scheduledString": scheduled}}]}

    assert indexed(plan("2020-05-01"), "activity-date") == [day("2020-05-01")]
    assert indexed(plan("after lunch"), "activity-date") == []


@pytest.mark.parametrize(("reference", "subject", "patient"), [
    ({"reference": "Patient/p1"}, True, True),
    ({"reference": "https://ehr.example/fhir/Patient/p1"}, True, True),
    ({"reference": "Group/g1"}, True, False),
    ({"reference": "#contained"}, False, False),
    ({"identifier": {"system": "urn:mrn", "value": "1"}}, False, False),
])
def test_references_and_resolve_is(reference: Json, subject: bool, patient: bool) -> None:
    resource = observation(subject=reference)
    expected = [ReferenceValue(reference["reference"])] if "reference" in reference else []
    assert indexed(resource, "subject") == (expected if subject else [])
    assert indexed(resource, "patient") == (expected if patient else [])


def test_canonical_references() -> None:
    response = {"resourceType": "QuestionnaireResponse", "questionnaire": "http://x.org/Questionnaire/q|1"}
    assert indexed(response, "questionnaire") == [ReferenceValue("http://x.org/Questionnaire/q|1")]


def test_money_is_a_quantity_in_iso_4217() -> None:
    invoice = {"resourceType": "Invoice", "totalNet": {"value": Decimal("12.50"), "currency": "EUR"}}
    assert indexed(invoice, "totalnet") == [QuantityValue(Decimal("12.50"), "urn:iso:std:iso:4217", "EUR", None)]


def test_numbers_keep_their_decimal_form() -> None:
    assessment = {"resourceType": "RiskAssessment", "prediction": [
        {"probabilityDecimal": Decimal("0.020")}, {"probabilityDecimal": 1.1}, {"probabilityDecimal": 3},
    ]}
    found = indexed(assessment, "probability")
    assert found == [NumberValue(Decimal("0.020")), NumberValue(Decimal("1.1")), NumberValue(Decimal(3))]
    assert str(found[0].value) == "0.020"  # type: ignore[union-attr]


def test_extension_parameters_index_the_extension_value() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/patient-extensions-Patient-mothersMaidenName"
    patient = {"resourceType": "Patient", "extension": [{"url": url, "valueString": "Smith"}]}
    assert indexed(patient, "mothersMaidenName") == [StringValue("Smith")]


def test_unknown_or_missing_resource_types_index_nothing() -> None:
    assert extract({"resourceType": "Wibble", "id": "x"}) == []
    assert extract({"id": "x"}) == []


def test_no_duplicates_and_a_stable_order() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "A"}]}
    assert indexed(patient, "family") == [StringValue("A")]
    found = extract(observation(valueQuantity=KG, subject={"reference": "Patient/1"}))
    assert found == extract(observation(valueQuantity=KG, subject={"reference": "Patient/1"}))
    assert [code for code, _ in found] == sorted(code for code, _ in found)
