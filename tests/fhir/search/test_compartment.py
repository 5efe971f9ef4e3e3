"""Which Patients' compartments a resource is in (compartmentdefinition-patient.html)."""

from __future__ import annotations

import pytest

from ehr.fhir.search.extract import patient_compartment


def test_a_patient_is_in_its_own_compartment_and_in_those_it_links_to() -> None:
    link = {"other": {"reference": "Patient/p0"}, "type": "seealso"}
    patient = {"resourceType": "Patient", "id": "p1", "link": [link]}
    assert patient_compartment(patient) == {"p1", "p0"}


@pytest.mark.parametrize(("reference", "ids"), [
    ("Patient/p1", {"p1"}),
    ("https://ehr.example/fhir/Patient/p1", {"p1"}),
    ("Patient/p1/_history/3", {"p1"}),
    ("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", set()),
    ("Group/g1", set()),
    ("#p1", set()),
])
def test_an_observation_is_in_the_compartment_of_the_patient_it_references(reference: str, ids: set[str]) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": reference}}
    assert patient_compartment(observation) == ids


def test_every_compartment_parameter_counts_and_other_targets_do_not() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/a"},
                   "performer": [{"reference": "Practitioner/d"}, {"reference": "Patient/b"}],
                   "focus": [{"reference": "Patient/c"}]}  # focus is not a compartment parameter
    assert patient_compartment(observation) == {"a", "b"}


def test_types_outside_the_compartment_are_in_none() -> None:
    organization = {"resourceType": "Organization", "id": "o", "partOf": {"reference": "Patient/x"}}
    assert patient_compartment(organization) == frozenset()
    assert patient_compartment({"resourceType": "Wibble"}) == frozenset()
