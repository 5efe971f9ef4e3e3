"""The committed R4 tables: what they hold, and that the generator reproduces them exactly."""

from __future__ import annotations

from ehr.fhir.definitions import TABLE
from tests.fhir.shared import R4_PACKAGE, committed_json, committed_table, generator, require


def test_generator_reproduces_the_committed_tables_byte_for_byte() -> None:
    script = generator("gen_r4_tables")
    tables = script.compile_tables(list(script.read_package(require(R4_PACKAGE))))
    assert script.render(tables) == committed_table(TABLE)


def test_tables_are_small() -> None:
    assert len(committed_table(TABLE)) < 3 * 1024 * 1024


def test_tables_hold_every_r4_resource_datatype_and_primitive() -> None:
    table = committed_json(TABLE)
    assert table["fhirVersion"] == "4.0.1"
    assert len(table["resources"]) == 146
    assert {"MedicinalProduct", "EffectEvidenceSynthesis", "Patient"} <= set(table["resources"])
    assert {"HumanName", "Extension", "Dosage", "Timing", "Timing.repeat"} <= set(table["types"])
    assert len(table["primitives"]) == 20
    assert table["primitives"]["integer"]["range"] == [-(2**31), 2**31 - 1]
    assert table["primitives"]["decimal"]["json"] == "decimal"
    assert table["primitives"]["id"]["regex"] == "[A-Za-z0-9\\-\\.]{1,64}"


def test_content_references_point_at_the_backbone_type() -> None:
    types = committed_json(TABLE)["types"]
    assert types["Questionnaire.item"]["item"]["type"] == "Questionnaire.item"
    assert types["Parameters.parameter"]["part"]["type"] == "Parameters.parameter"
    assert types["Parameters.parameter"]["resource"]["type"] == "Resource"


def test_choice_elements_are_expanded_per_type() -> None:
    patient = committed_json(TABLE)["types"]["Patient"]
    expected = {"choice": "deceased", "max": "1", "min": 0, "summary": True, "type": "boolean"}
    assert patient["deceasedBoolean"] == expected
    assert patient["deceasedDateTime"]["type"] == "dateTime"
    assert "deceased[x]" not in patient
    assert patient["id"] == {"attribute": True, "max": "1", "min": 0, "summary": True, "type": "id"}


def test_only_enumerable_required_code_bindings_are_kept() -> None:
    table = committed_json(TABLE)
    gender = "http://hl7.org/fhir/ValueSet/administrative-gender"
    assert table["types"]["Patient"]["gender"]["binding"] == gender
    assert table["valuesets"][gender] == [
        "female", "male", "other", "unknown"
    ]
    assert "binding" not in table["types"]["Attachment"]["contentType"]   # mime types: external
    assert "binding" not in table["types"]["Money"]["currency"]           # ISO 4217: external
    assert "binding" not in table["types"]["Patient"]["maritalStatus"]    # a CodeableConcept
