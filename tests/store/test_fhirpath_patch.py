"""FHIRPath Patch (R4 fhirpatch.html) on resources, against hand-checked results."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ehr.errors import EhrError
from ehr.store.fhirpath_patch import apply, check_parameters

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p",
    "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
    "name": [{"family": "Doe", "given": ["Jane", "Q"]}],
    "birthDate": "1970-01-01",
}


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    return {"name": "operation", "part": [
        {"name": "type", "valueCode": kind}, {"name": "path", "valueString": path},
        *({"name": name, **value} for name, value in parts.items()),
    ]}


def patched(*operations: dict[str, Any]) -> dict[str, Any]:
    document = {"resourceType": "Parameters", "parameter": list(operations)}
    return apply(copy.deepcopy(PATIENT), check_parameters(document))


def test_replace_a_primitive_and_an_element_found_by_where() -> None:
    out = patched(
        operation("replace", "Patient.birthDate", value={"valueDate": "1971-02-03"}),
        operation("replace", "Patient.identifier.where(system = 'urn:b').value", value={"valueString": "9"}),
    )
    assert out["birthDate"] == "1971-02-03"
    assert out["identifier"][1]["value"] == "9" and out["identifier"][0]["value"] == "1"


def test_add_to_a_repeating_and_a_single_element() -> None:
    out = patched(
        operation("add", "Patient", name={"valueString": "telecom"},
                  value={"valueContactPoint": {"system": "phone", "value": "555"}}),
        operation("add", "Patient", name={"valueString": "gender"}, value={"valueCode": "female"}),
        operation("add", "Patient.name[0]", name={"valueString": "given"}, value={"valueString": "Z"}),
    )
    assert out["telecom"] == [{"system": "phone", "value": "555"}]
    assert out["gender"] == "female"
    assert out["name"][0]["given"] == ["Jane", "Q", "Z"]


def test_add_a_complex_value_given_as_parts() -> None:
    out = patched(operation("add", "Patient", name={"valueString": "contact"}, value={"part": [
        {"name": "gender", "valueCode": "male"}, {"name": "name", "valueHumanName": {"family": "Roe"}},
    ]}))
    assert out["contact"] == [{"gender": "male", "name": {"family": "Roe"}}]


def test_insert_move_and_delete_in_lists() -> None:
    out = patched(
        operation("insert", "Patient.name[0].given", index={"valueInteger": 0}, value={"valueString": "A"}),
        operation("move", "Patient.name[0].given", source={"valueInteger": 2}, destination={"valueInteger": 0}),
        operation("delete", "Patient.identifier.where(system = 'urn:a')"),
    )
    assert out["name"][0]["given"] == ["Q", "A", "Jane"]
    assert out["identifier"] == [{"system": "urn:b", "value": "2"}]


def test_delete_of_nothing_is_not_an_error_and_the_last_item_removes_the_list() -> None:
    out = patched(operation("delete", "Patient.telecom"), operation("delete", "Patient.identifier.where(value = '1')"),
                  operation("delete", "Patient.identifier.first()"))
    assert "identifier" not in out and "telecom" not in out


@pytest.mark.parametrize("bad", [
    operation("replace", "Patient.identifier.value", value={"valueString": "x"}),   # two matches
    operation("replace", "Patient.telecom", value={"valueString": "x"}),             # none
    operation("add", "Patient", name={"valueString": "birthDate"}, value={"valueDate": "2000"}),  # present
    operation("insert", "Patient.name[0].given", index={"valueInteger": 7}, value={"valueString": "x"}),
    operation("replace", "Patient.name.select(family)", value={"valueString": "x"}),  # outside the subset
    operation("replace", "Patient.(", value={"valueString": "x"}),                    # not FHIRPath
])
def test_operations_that_do_not_apply_are_unprocessable(bad: dict[str, Any]) -> None:
    with pytest.raises(EhrError) as failed:
        patched(bad)
    assert failed.value.category.status == 422


def test_a_malformed_patch_document_is_refused() -> None:
    for document in ({"resourceType": "Patient"}, {"resourceType": "Parameters", "parameter": [{"name": "x"}]},
                     {"resourceType": "Parameters", "parameter": [operation("explode", "Patient")]}):
        with pytest.raises(EhrError) as refused:
            check_parameters(document)
        assert refused.value.category.status == 400
