"""SMART scopes v1 and v2 parse into one permission model; deny by default."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smart_auth.scopes import Grant, InvalidScope, Permissions, parse_scope


@pytest.mark.parametrize(
    ("scope", "letters"),
    [
        ("system/Patient.read", "rs"),
        ("system/Patient.write", "cud"),
        ("system/*.*", "cruds"),
        ("system/Patient.cruds", "cruds"),
        ("system/Observation.rs", "rs"),
        ("system/Observation.c", "c"),
    ],
)
def test_v1_and_v2_letters(scope: str, letters: str) -> None:
    grant = parse_scope(scope)
    assert grant is not None
    assert grant.letters == frozenset(letters)


@pytest.mark.parametrize(
    "scope", ["system/Patient.", "system/Patient.sr", "system/patient.read", "user/Patient", "system/Pa tient.r"]
)
def test_malformed_scopes_are_refused(scope: str) -> None:
    with pytest.raises(InvalidScope):
        parse_scope(scope)


def test_non_data_scopes_are_kept_aside() -> None:
    permissions = Permissions.parse("openid fhirUser launch/patient system/Patient.rs")
    assert permissions.other_scopes == ("openid", "fhirUser", "launch/patient")
    assert len(permissions.grants) == 1


def test_only_unconditional_system_grants_allow() -> None:
    permissions = Permissions.parse("patient/*.cruds user/*.cruds system/Observation.rs?category=laboratory")
    assert not permissions.allows("Observation", "r")
    assert not permissions.allows("Patient", "r")
    assert permissions.types_allowed("r") == frozenset()


def test_wildcard_and_types() -> None:
    permissions = Permissions.parse("system/Patient.rs system/Observation.r")
    assert permissions.allows("Patient", "s")
    assert not permissions.allows("Observation", "s")
    assert not permissions.allows("Patient", "c")
    assert permissions.types_allowed("r") == {"Patient", "Observation"}
    assert Permissions.parse("system/*.r").types_allowed("r") is None


grants = st.builds(
    Grant,
    st.sampled_from(["patient", "user", "system"]),
    st.sampled_from(["*", "Patient", "Observation", "MedicationRequest"]),
    st.sets(st.sampled_from("cruds"), min_size=1).map(frozenset),
    st.none() | st.sampled_from(["category=laboratory", "code=http://loinc.org|1234-5"]),
)


@given(grants)
def test_scopes_round_trip(grant: Grant) -> None:
    assert parse_scope(grant.scope()) == grant
