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


def test_scope01_read_is_never_rd() -> None:
    grant = parse_scope("patient/Observation.read")
    assert grant is not None and grant.letters == frozenset("rs")
    with pytest.raises(InvalidScope):
        parse_scope("patient/Observation.dus")


def test_scope02_v1_scopes_are_answered_as_v1() -> None:
    assert Permissions.parse("patient/*.read user/Patient.write system/*.*").scope_string() == (
        "patient/*.read user/Patient.write system/*.*"
    )
    assert Permissions.parse("patient/*.rs").scope_string() == "patient/*.rs"


def test_granular_query_needs_a_type() -> None:
    with pytest.raises(InvalidScope):
        parse_scope("patient/*.rs?category=laboratory")


def test_narrowed_keeps_what_the_registration_covers() -> None:
    allowed = Permissions.parse("patient/*.rs user/Observation.cruds launch/patient openid")
    asked = Permissions.parse(
        "patient/Observation.rs patient/Patient.cruds user/Observation.rs?category=x openid fhirUser"
    )
    assert asked.narrowed(allowed).scope_string() == "patient/Observation.rs user/Observation.rs?category=x openid"


grants = st.builds(
    Grant,
    st.sampled_from(["patient", "user", "system"]),
    st.sampled_from(["*", "Patient", "Observation", "MedicationRequest"]),
    st.sets(st.sampled_from("cruds"), min_size=1).map(frozenset),
    st.none() | st.sampled_from(["category=laboratory", "code=http://loinc.org|1234-5"]),
).filter(lambda g: g.query is None or g.resource_type != "*")


@given(grants)
def test_scopes_round_trip(grant: Grant) -> None:
    assert parse_scope(grant.scope()) == grant
