"""The committed search table: what it holds, that it compiles, and that the generator reproduces it."""

from __future__ import annotations

import pytest

from ehr.fhir.search.definitions import TABLE, compiled, params, patient_compartment_params
from ehr.fhir.search.fhirtypes import resource_types
from ehr.fhir.search.values import Component
from tests.fhir.shared import R4_PACKAGE, committed_json, committed_table, generator, require

RESOURCE_LEVEL = {"_id", "_lastUpdated", "_profile", "_security", "_source", "_tag"}


def test_generator_reproduces_the_committed_table_byte_for_byte() -> None:
    script = generator("gen_r4_search")
    tables = script.compile_search(list(script.read_package(require(R4_PACKAGE))))
    assert script.render(tables) == committed_table(TABLE)
    assert script.check_compartment(tables) == []


def test_the_table_is_small() -> None:
    assert len(committed_table(TABLE)) < 1024 * 1024


def test_patient_parameters() -> None:
    patient = params("Patient")
    assert RESOURCE_LEVEL | {"name", "family", "given", "birthdate", "identifier", "phone", "email", "address",
                             "general-practitioner", "organization", "deceased", "link"} <= set(patient)
    name = patient["name"]
    assert (name.type, name.expression, name.url) == (
        "string", "Patient.name", "http://hl7.org/fhir/SearchParameter/Patient-name")
    assert patient["phone"].expression == "Patient.telecom.where(system='phone')"
    assert patient["general-practitioner"].targets == ("Organization", "Practitioner", "PractitionerRole")
    assert "_text" not in patient and "_content" not in patient


def test_a_shared_definition_keeps_only_its_own_alternative_and_narrows_targets() -> None:
    care_plan = params("CarePlan")["patient"]
    assert care_plan.expression == "CarePlan.subject.where(resolve() is Patient)"
    assert care_plan.targets == ("Patient",)
    assert care_plan.description == "Who the care plan is for"
    assert params("AllergyIntolerance")["patient"].expression == "AllergyIntolerance.patient"


def test_composites_name_their_components() -> None:
    composite = params("Observation")["code-value-quantity"]
    assert (composite.type, composite.expression) == ("composite", "Observation")
    assert composite.components == (
        Component("code", "token", "code"), Component("value-quantity", "quantity", "value.as(Quantity)"),
    )
    assert params("Observation")["component-code-value-quantity"].expression == "Observation.component"


def test_every_type_has_the_resource_level_parameters_and_unknown_types_none() -> None:
    assert set(params("Binary")) == RESOURCE_LEVEL
    assert all(RESOURCE_LEVEL <= set(params(name)) for name in resource_types())
    assert params("Wibble") == {}
    assert params("Resource") == {}


def test_every_parameter_of_every_type_compiles() -> None:
    assert sum(len(compiled(name)) for name in resource_types()) == sum(len(params(n)) for n in resource_types())


@pytest.mark.parametrize(("resource_type", "codes"), [
    ("Observation", ("subject", "performer")),
    ("Patient", ("link",)),
    ("AllergyIntolerance", ("patient", "recorder", "asserter")),
    ("Organization", ()),
    ("Wibble", ()),
])
def test_patient_compartment_parameters(resource_type: str, codes: tuple[str, ...]) -> None:
    assert patient_compartment_params(resource_type) == codes


def test_what_is_left_out_is_listed_with_the_reason() -> None:
    omitted = committed_json(TABLE)["omitted"]
    assert set(omitted) == {
        "Bundle-composition", "Bundle-message", "DocumentReference-relationship", "DomainResource-text",
        "Location-near", "Resource-content", "Resource-query", "example", "example-extension", "example-reference",
        "filter", "patient-extensions-Patient-age", "patient-extensions-Patient-birthOrderBoolean",
        *(f"{kind}-extensions-{base}-{name}" for kind, base in [("codesystem", "CodeSystem"), ("valueset", "ValueSet")]
          for name in ["author", "effective", "end", "keyword", "workflow"]),
    }
    assert "special" in omitted["Location-near"]
    assert "nothing a reference parameter indexes" in omitted["DocumentReference-relationship"]
    assert "near" not in params("Location") and "composition" not in params("Bundle")


def test_partly_indexable_parameters_say_what_they_skip() -> None:
    observation = {e["code"]: e for e in committed_json(TABLE)["params"]["Observation"]}
    assert observation["value-quantity"]["unindexed"] == ["SampledData"]
    assert "unindexed" not in observation["code"]
