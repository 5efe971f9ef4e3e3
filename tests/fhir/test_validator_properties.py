"""Properties: every mutation of a valid Patient is reported; no input makes validate() raise."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ehr.fhir.definitions import definitions
from ehr.fhir.primitives import LINEAR_EQUIVALENTS
from ehr.fhir.validator import RESOURCE_TYPES, Issue, validate

EXT = "http://example.org/fhir/StructureDefinition/x"
VALID_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "example",
    "meta": {"versionId": "1", "lastUpdated": "2024-01-01T10:00:00Z"},
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>'},
    "extension": [{"url": EXT, "valueCode": "F"},
                  {"url": EXT, "extension": [{"url": "a", "valueDecimal": Decimal("1.5")}]}],
    "identifier": [{"use": "usual", "system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345",
                    "type": {"coding": [{"system": "http://example.org", "code": "MR"}]}}],
    "active": True,
    "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"],
              "_given": [None, {"extension": [{"url": EXT, "valueString": "J"}]}]}],
    "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "_birthDate": {"extension": [{"url": EXT, "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
    "deceasedBoolean": False,
    "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille",
                 "period": {"start": "1974-12-25"}}],
    "multipleBirthInteger": 1,
    "contact": [{"relationship": [{"text": "partner"}], "gender": "female",
                 "name": {"family": "du Marché", "_family": {"id": "f1"}}}],
    "contained": [{"resourceType": "Organization", "id": "org", "name": "ACME"}],
    "managingOrganization": {"reference": "#org"},
}

Location = tuple[Any, Any]  # (container, key or index)


def _locations(node: object) -> Iterator[Location]:
    """Every (container, key) in the tree, parents before children."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield node, key
        yield from _locations(value)


# Which (container, value) pairs each kind of mutation can target.
MUTABLE: dict[str, Callable[[Any, Any], bool]] = {
    "unknown": lambda container, value: isinstance(value, dict),
    "wrap": lambda container, value: isinstance(container, dict) and not isinstance(value, list),
    "unwrap": lambda container, value: isinstance(value, list),
    "swap": lambda container, value: value is not None,
}


def _mutable(kind: str) -> list[tuple[int, Any]]:
    """(position, key) of the locations a mutation of ``kind`` can target in VALID_PATIENT."""
    applies = MUTABLE[kind]
    return [(position, key) for position, (container, key) in enumerate(_locations(VALID_PATIENT))
            if applies(container, container[key])]


def _swapped(value: object) -> object:
    """A value of another JSON type, wrong wherever ``value`` was right."""
    if isinstance(value, str):
        return True
    if isinstance(value, bool | dict):
        return "x"
    if isinstance(value, int | Decimal):
        return "1"
    return {"x": 1}  # list -> object


def _mutate(kind: str, position: int) -> dict[str, Any]:
    resource = copy.deepcopy(VALID_PATIENT)
    container, key = list(_locations(resource))[position]
    value = container[key]
    if kind == "unknown":
        value["notAnElementOfAnyType"] = "x"
    elif kind == "wrap":
        container[key] = [value]
    elif kind == "unwrap":
        container[key] = value[0]
    else:
        container[key] = _swapped(value)
    return resource


def test_the_base_patient_is_valid() -> None:
    assert validate(VALID_PATIENT) == []


@given(st.data())
def test_every_mutation_of_a_valid_patient_is_reported(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(MUTABLE)))
    position, _ = data.draw(st.sampled_from(_mutable(kind)))
    issues = validate(_mutate(kind, position))
    assert issues, f"{kind} at location {position} was not reported"
    assert all(issue.code in {"structure", "value", "invariant", "required"} for issue in issues)


NAMES = sorted({name for kind in definitions().resources.values() for name in kind.elements}
               | {"resourceType", "url", "valueString", "_given", "given", "extension", "div"})
SECRET = "s3cr3t-ePHI"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.decimals(allow_nan=True), st.floats(),
    st.sampled_from(sorted(RESOURCE_TYPES)), st.text(max_size=20).map(lambda text: SECRET + text),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=40,
)


@settings(max_examples=300)
@given(json_like)
def test_validate_never_raises_on_json_like_values(value: object) -> None:
    assert all(isinstance(issue, Issue) for issue in validate(value))


@settings(max_examples=300)
@given(st.sampled_from(sorted(RESOURCE_TYPES)),
       st.dictionaries(st.sampled_from(NAMES), json_like, max_size=8))
def test_diagnostics_never_repeat_values(resource_type: str, elements: dict[str, Any]) -> None:
    issues = validate({"resourceType": resource_type, **elements})
    assert all(SECRET not in issue.diagnostics for issue in issues)


_OFFICIAL_BASE64 = re.compile(r"(\s*([0-9a-zA-Z\+/=]){4}\s*)+", re.ASCII)
_LINEAR_BASE64 = re.compile(LINEAR_EQUIVALENTS["base64Binary"], re.ASCII)


@given(st.text(alphabet="AZaz09+/= \t\n!", max_size=14))
def test_linear_base64_regex_matches_the_official_one(text: str) -> None:
    assert bool(_LINEAR_BASE64.fullmatch(text)) == bool(_OFFICIAL_BASE64.fullmatch(text))


def test_primitive_checks_take_linear_time_on_hostile_input() -> None:
    hostile = ["AAAA " * 5000 + "!", "a " * 20000 + " ", "9" * 50000 + "x", "1.2.3" * 10000]
    started = time.perf_counter()
    for check in definitions().primitives.values():
        for text in hostile:
            check(text)
    assert time.perf_counter() - started < 5.0
