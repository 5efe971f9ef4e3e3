"""The FHIRPath subset of the R4 search expressions: parsing, typed navigation, functions, errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ehr.fhir.search.fhirpath import FhirPathError, Node, compile_path
from ehr.fhir.search.fhirpath_syntax import alternatives, parse

Json = dict[str, Any]


def run(expression: str, resource: Json) -> list[Node]:
    kind = resource["resourceType"]
    return compile_path(expression, [kind], kind).run(resource)


def values(expression: str, resource: Json) -> list[Any]:
    return [value for value, _ in run(expression, resource)]


def test_alternatives_split_only_the_top_level_union() -> None:
    expression = "(A.value as Quantity) | A.b.where(c='x|y') | A.d.where(resolve() is Patient)"
    assert alternatives(expression) == [
        "(A.value as Quantity)", "A.b.where(c='x|y')", "A.d.where(resolve() is Patient)",
    ]


@given(st.lists(st.from_regex(r"[A-Z][a-z]{0,5}(\.[a-z]{1,6}){0,3}", fullmatch=True), min_size=1, max_size=6))
def test_alternatives_round_trip_a_joined_union(paths: list[str]) -> None:
    assert alternatives(" | ".join(paths)) == paths


@pytest.mark.parametrize("text", ["Patient.name +", "Patient.name.where(", "Patient..name", "Patient.name # x", ""])
def test_text_outside_the_subset_is_an_error(text: str) -> None:
    with pytest.raises(FhirPathError):
        parse(text)


def test_a_path_yields_each_item_with_its_declared_type() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B"}], "birthDate": "2000"}
    assert run("Patient.name", patient) == [({"family": "A"}, "HumanName"), ({"family": "B"}, "HumanName")]
    assert run("Patient.name.family", patient) == [("A", "string"), ("B", "string")]
    assert run("Patient.birthDate", patient) == [("2000", "date")]


def test_primitive_extension_siblings_and_null_array_items_are_not_values() -> None:
    patient = {"resourceType": "Patient", "name": [{"given": [None, "Jo"], "_given": [{"id": "1"}, None]}],
               "_birthDate": {"extension": []}}
    assert values("Patient.name.given", patient) == ["Jo"]
    assert values("Patient.birthDate", patient) == []


@pytest.mark.parametrize(("key", "value", "fhir_type"), [
    ("effectiveDateTime", "2020-01-01", "dateTime"),
    ("effectivePeriod", {"start": "2020"}, "Period"),
    ("effectiveTiming", {"event": ["2020"]}, "Timing"),
    ("effectiveInstant", "2020-01-01T00:00:00Z", "instant"),
])
def test_a_choice_without_a_type_filter_yields_the_present_variant_with_its_type(
    key: str, value: Any, fhir_type: str
) -> None:
    observation = {"resourceType": "Observation", key: value}
    assert run("Observation.effective", observation) == [(value, fhir_type)]


@pytest.mark.parametrize("expression", [
    "(Observation.value as Quantity)", "Observation.value.as(Quantity)", "Observation.value.ofType(Quantity)",
])
def test_type_filters_keep_one_choice_variant(expression: str) -> None:
    quantity = {"value": Decimal("1.5")}
    assert run(expression, {"resourceType": "Observation", "valueQuantity": quantity}) == [(quantity, "Quantity")]
    assert run(expression, {"resourceType": "Observation", "valueString": "x"}) == []


def test_a_type_filter_keeps_specialisations() -> None:
    age = {"value": 3, "unit": "a"}
    assert run("Condition.onset.as(Quantity)", {"resourceType": "Condition", "onsetAge": age}) == [(age, "Age")]


def test_a_member_after_a_type_filter() -> None:
    observation = {"resourceType": "Observation", "valueCodeableConcept": {"text": "pos"}}
    assert run("(Observation.value as CodeableConcept).text", observation) == [("pos", "string")]


def test_where_compares_an_element_with_a_literal() -> None:
    patient = {"resourceType": "Patient", "telecom": [
        {"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}, {"value": "2"},
    ]}
    assert [t["value"] for t in values("Patient.telecom.where(system='phone')", patient)] == ["1"]


@pytest.mark.parametrize(("reference", "kept"), [
    ({"reference": "Patient/1"}, True),
    ({"reference": "https://ehr.example/fhir/Patient/1"}, True),
    ({"reference": "Patient/1/_history/2"}, True),
    ({"reference": "Group/1"}, False),
    ({"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "type": "Patient"}, True),
    ({"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}, False),
    ({"type": "http://hl7.org/fhir/StructureDefinition/Patient", "identifier": {"value": "x"}}, True),
    ({"display": "someone"}, False),
])
def test_where_resolve_is_reads_the_target_type_from_the_reference(reference: Json, kept: bool) -> None:
    observation = {"resourceType": "Observation", "subject": reference}
    assert values("Observation.subject.where(resolve() is Patient)", observation) == ([reference] if kept else [])


def test_extension_by_url_and_has_extension() -> None:
    url = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"
    extensions = [{"url": url, "valueString": "X"}, {"url": "o", "valueCode": "c"}]
    patient = {"resourceType": "Patient", "extension": extensions}
    assert run(f"Patient.extension('{url}')", patient) == [({"url": url, "valueString": "X"}, "Extension")]
    response = {"resourceType": "QuestionnaireResponse", "item": [
        {"linkId": "1", "answer": [{"valueReference": {"reference": "Patient/1"}}]},
        {"linkId": "2", "extension": [{"url": "s", "valueBoolean": True}],
         "answer": [{"valueReference": {"reference": "Patient/2"}}, {"valueString": "x"}]},
    ]}
    expression = "QuestionnaireResponse.item.where(hasExtension('s')).answer.value.ofType(Reference)"
    assert run(expression, response) == [({"reference": "Patient/2"}, "Reference")]


def test_an_indexer_takes_one_item() -> None:
    bundle = {"resourceType": "Bundle", "entry": [{"fullUrl": "a"}, {"fullUrl": "b"}]}
    assert values("Bundle.entry[1].fullUrl", bundle) == ["b"]
    assert values("Bundle.entry[5].fullUrl", bundle) == []


@pytest.mark.parametrize(("deceased", "expected"), [
    ({}, False), ({"deceasedBoolean": False}, False), ({"deceasedBoolean": True}, True),
    ({"deceasedDateTime": "2020-01-01"}, True),
])
def test_the_boolean_expression_of_patient_deceased(deceased: Json, expected: bool) -> None:
    patient = {"resourceType": "Patient", **deceased}
    assert run("Patient.deceased.exists() and Patient.deceased != false", patient) == [(expected, "boolean")]


def test_relative_paths_start_at_the_focus() -> None:
    plan = {"resourceType": "InsurancePlan", "name": "N", "alias": ["A1", "A2"]}
    assert values("name | alias", plan) == ["N", "A1", "A2"]


def test_resource_level_paths_apply_to_every_type() -> None:
    tag = {"system": "s", "code": "c"}
    assert run("Resource.meta.tag", {"resourceType": "Basic", "meta": {"tag": [tag]}}) == [(tag, "Coding")]


def test_component_paths_run_on_backbone_elements_and_see_the_resource() -> None:
    sequence: Json = {"resourceType": "MolecularSequence", "referenceSeq": {"chromosome": {"text": "1"}},
                "variant": [{"start": 5}]}
    compiled = compile_path("%resource.referenceSeq.chromosome", ["MolecularSequence.variant"], "MolecularSequence")
    variant = ({"start": 5}, "MolecularSequence.variant")
    assert compiled.evaluate([variant], sequence) == [({"text": "1"}, "CodeableConcept")]


def test_the_keys_a_result_needs_are_known_at_compile_time() -> None:
    def keys(expression: str) -> set[str] | None:
        found = compile_path(expression, ["Observation"], "Observation").keys
        return None if found is None else set(found)

    assert keys("Observation.code") == {"code"}
    assert keys("(Observation.value as Quantity) | Observation.component.code") == {"valueQuantity", "component"}
    assert keys("Observation.subject.where(resolve() is Patient)") == {"subject"}
    assert keys("Observation.effective") == {"effectiveDateTime", "effectivePeriod", "effectiveTiming",
                                            "effectiveInstant"}
    assert keys("Observation") is None
    assert keys("Observation.code.exists()") is None


@pytest.mark.parametrize(("expression", "message"), [
    ("Patient.nickname", "no element"),
    ("(Patient.birthDate as Quantity)", "no element 'birthDate' of the types asked for"),
    ("Patient.birthDate.where(resolve() is Patient)", "unsupported function resolve"),
    ("(Patient.name | Patient.birthDate) as Quantity", "never a Quantity"),
    ("Patient.name.first()", "unsupported function"),
    ("Observation.code", "not the context"),
    ("%context.name", "unsupported variable"),
    ("Patient.name.as(Wibble)", "unknown type"),
    ("Patient.birthDate.extension('u')", "only complex values"),
])
def test_what_cannot_be_indexed_faithfully_does_not_compile(expression: str, message: str) -> None:
    with pytest.raises(FhirPathError, match=message):
        compile_path(expression, ["Patient"], "Patient")
