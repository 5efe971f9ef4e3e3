"""Each structural rule of ehr.fhir.validator, asserted on issue code and location."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

import pytest

from ehr.fhir import validator
from ehr.fhir.validator import RESOURCE_TYPES, Issue, validate

XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">Peter</div>'
EXTENSION_URL = "http://example.org/fhir/StructureDefinition/x"


def issues_of(resource: object) -> list[tuple[str, str]]:
    return [(issue.code, issue.expression) for issue in validate(resource)]


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **elements}


def bundle(*resources: object) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(resources)]}


def test_valid_patient_has_no_issues() -> None:
    resource = patient(
        text={"status": "generated", "div": XHTML},
        extension=[{"url": EXTENSION_URL, "valueCode": "F"}],
        identifier=[{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
        name=[{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]}],
        telecom=[{"system": "phone", "value": "(03) 5555 6473", "rank": 1}],
        gender="male", birthDate="1974-12-25", deceasedBoolean=False,
        address=[{"line": ["534 Erewhon St"], "city": "PleasantVille", "postalCode": "3999"}],
        multipleBirthInteger=2,
    )
    assert validate(resource) == []


def test_issue_is_a_frozen_error_by_default() -> None:
    issue = Issue("structure", "Patient.foo", "unknown element")
    assert issue.severity == "error"
    with pytest.raises(dataclasses.FrozenInstanceError):
        issue.code = "value"  # type: ignore[misc]


# --- resourceType -------------------------------------------------------------------------


def test_all_r4_resource_types_are_known_including_those_r4b_removed() -> None:
    assert len(RESOURCE_TYPES) == 146
    assert {"Patient", "Bundle", "Parameters", "MedicinalProduct", "EffectEvidenceSynthesis",
            "SubstanceSpecification", "DeviceUseStatement"} <= RESOURCE_TYPES
    assert not {"Resource", "DomainResource", "Element", "HumanName"} & RESOURCE_TYPES
    assert validator.RESOURCE_TYPES is RESOURCE_TYPES


@pytest.mark.parametrize("resource", [[], "Patient", None, 1, Decimal("1.5"), True])
def test_top_level_must_be_an_object(resource: object) -> None:
    assert issues_of(resource) == [("structure", "$this")]


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        ({"id": "x"}, ("required", "resourceType")),
        ({"resourceType": "Patients"}, ("structure", "resourceType")),
        ({"resourceType": "DomainResource"}, ("structure", "resourceType")),
        ({"resourceType": "HumanName"}, ("structure", "resourceType")),
        ({"resourceType": ["Patient"]}, ("structure", "resourceType")),
    ],
)
def test_top_level_resource_type_must_be_known(resource: object, expected: tuple[str, str]) -> None:
    assert issues_of(resource) == [expected]


def test_r4_only_resource_types_validate() -> None:
    product = {"resourceType": "MedicinalProduct", "name": [{"productName": "Aspirin"}]}
    synthesis = {"resourceType": "EffectEvidenceSynthesis", "status": "draft",
                 "population": {"reference": "Group/1"}, "exposure": {"reference": "Group/2"},
                 "exposureAlternative": {"reference": "Group/3"}, "outcome": {"reference": "Group/4"}}
    assert validate(product) == []
    assert validate(synthesis) == []


def test_nested_resources_are_validated_against_their_own_type() -> None:
    contained = patient(contained=[{"resourceType": "Organization", "name": "ACME", "gender": "x"}])
    assert issues_of(contained) == [("structure", "Patient.contained[0].gender")]
    entries = bundle(patient(), patient(), patient(foo=1))
    assert issues_of(entries) == [("structure", "Bundle.entry[2].resource.foo")]
    part = {"name": "q", "resource": {"resourceType": "Nope"}}
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "p", "part": [part]}]}
    where = "Parameters.parameter[0].part[0].resource.resourceType"
    assert issues_of(parameters) == [("structure", where)]


def test_nested_resource_needs_a_resource_type() -> None:
    assert issues_of(bundle({"id": "1"})) == [("required", "Bundle.entry[0].resource.resourceType")]
    assert issues_of(bundle("Patient/1")) == [("structure", "Bundle.entry[0].resource")]


def test_resource_type_is_only_allowed_where_a_resource_is() -> None:
    resource = patient(name=[{"resourceType": "HumanName", "family": "Chalmers"}])
    assert issues_of(resource) == [("structure", "Patient.name[0].resourceType")]


# --- element names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elements", "where"),
    [
        ({"nickname": "Pete"}, "Patient.nickname"),
        ({"name": [{"family": "C", "middle": "J"}]}, "Patient.name[0].middle"),
        ({"contact": [{"gender": "male", "hobby": "golf"}]}, "Patient.contact[0].hobby"),
        ({"meta": {"versionId": "1", "tags": []}}, "Patient.meta.tags"),
        ({"Gender": "male"}, "Patient.Gender"),
        ({"deceasedString": "yes"}, "Patient.deceasedString"),  # not one of deceased[x]'s types
        ({"deceased": True}, "Patient.deceased"),
        ({"_name": {"id": "1"}}, "Patient._name"),               # "_" only for primitives
        ({"_id": {"id": "1"}}, "Patient._id"),                   # id is a plain JSON string
        ({"text": {"status": "generated", "div": XHTML, "_div": {"id": "1"}}}, "Patient.text._div"),
    ],
)
def test_unknown_elements_are_errors(elements: dict[str, Any], where: str) -> None:
    assert issues_of(patient(**elements)) == [("structure", where)]


@pytest.mark.parametrize("key", ["fhir_comments", "", "na me", "x" * 100])
def test_invalid_property_names_are_reported_without_repeating_them(key: str) -> None:
    issues = validate(patient(**{key: "v"}))
    assert [(issue.code, issue.expression) for issue in issues] == [("structure", "Patient")]


# --- cardinality -----------------------------------------------------------------------------


def test_missing_required_elements_are_reported() -> None:
    observation = {"resourceType": "Observation", "text": {"status": "generated"}}
    assert sorted(issues_of(observation)) == [
        ("required", "Observation.code"),
        ("required", "Observation.status"),
        ("required", "Observation.text.div"),
    ]


def test_max_one_must_not_be_an_array_and_many_must_be() -> None:
    assert issues_of(patient(gender=["male"])) == [("structure", "Patient.gender")]
    assert issues_of(patient(name={"family": "Chalmers"})) == [("structure", "Patient.name")]
    assert issues_of(patient(name=[{"given": "Peter"}])) == [("structure", "Patient.name[0].given")]


def test_complex_elements_must_be_objects() -> None:
    assert issues_of(patient(maritalStatus="M")) == [("structure", "Patient.maritalStatus")]
    assert issues_of(patient(name=["Peter"])) == [("structure", "Patient.name[0]")]


# --- choice types ----------------------------------------------------------------------------


def test_only_one_choice_variant_is_allowed() -> None:
    resource = patient(deceasedBoolean=True, deceasedDateTime="2020-01-01")
    assert issues_of(resource) == [("structure", "Patient.deceasedDateTime")]


def test_required_choice_needs_one_variant() -> None:
    request = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/1"}}
    assert issues_of(request) == [("required", "MedicationRequest.medication[x]")]
    request["medicationReference"] = {"reference": "Medication/1"}
    assert validate(request) == []


def test_choice_variant_is_checked_against_its_own_type() -> None:
    assert issues_of(patient(deceasedDateTime="yesterday")) == [("value", "Patient.deceasedDateTime")]
    assert issues_of(patient(multipleBirthBoolean=1)) == [("structure", "Patient.multipleBirthBoolean")]


# --- primitive extensions (_name) ------------------------------------------------------------

_EXT = {"extension": [{"url": EXTENSION_URL, "valueString": "a"}]}


def test_primitive_may_be_replaced_by_its_extension_sibling() -> None:
    assert validate(patient(_birthDate=_EXT)) == []
    assert validate(patient(birthDate="1974", _birthDate=_EXT)) == []
    observation = {"resourceType": "Observation", "_status": _EXT, "code": {"text": "x"}}
    assert validate(observation) == []  # a required primitive present only as its extension


def test_repeating_primitive_extensions_are_aligned_arrays() -> None:
    assert validate(patient(name=[{"given": ["A", "B"], "_given": [None, {"id": "g2"}]}])) == []
    assert validate(patient(name=[{"given": ["A", None], "_given": [None, _EXT]}])) == []
    assert validate(patient(name=[{"_given": [_EXT]}])) == []


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ({"given": ["A", "B"], "_given": [None]}, "Patient.name[0]._given"),
        ({"given": ["A", None], "_given": [None, None]}, "Patient.name[0].given[1]"),
        ({"given": [None]}, "Patient.name[0].given[0]"),
        ({"_given": [None]}, "Patient.name[0].given[0]"),
        ({"given": ["A"], "_given": []}, "Patient.name[0]._given"),
        ({"given": ["A"], "_given": _EXT}, "Patient.name[0]._given"),
        ({"given": ["A"], "_given": ["x"]}, "Patient.name[0].given[0]"),
        ({"given": ["A"], "_given": [{}]}, "Patient.name[0].given[0]"),
        ({"_family": [_EXT]}, "Patient.name[0]._family"),
        ({"_family": {"value": "x"}}, "Patient.name[0].family.value"),
        ({"_family": {"extension": [{"valueString": "x"}]}}, "Patient.name[0].family.extension[0].url"),
    ],
)
def test_malformed_primitive_extensions_are_errors(name: dict[str, Any], where: str) -> None:
    issues = issues_of(patient(name=[name]))
    assert len(issues) == 1
    assert issues[0][1] == where
    assert issues[0][0] in {"structure", "required", "invariant"}


def test_extension_sibling_counts_as_the_choice_variant() -> None:
    extension = {"url": EXTENSION_URL, "_valueString": _EXT}
    assert validate(patient(extension=[extension])) == []
    extension = {"url": EXTENSION_URL, "valueCode": "a", "_valueString": _EXT}
    where = "Patient.extension[0].valueString"
    assert issues_of(patient(extension=[extension])) == [("structure", where)]


# --- ele-1 and limits ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        ({"name": [{}]}, ("invariant", "Patient.name[0]")),
        ({"maritalStatus": {}}, ("invariant", "Patient.maritalStatus")),
        ({"name": []}, ("structure", "Patient.name")),
        ({"name": [None]}, ("structure", "Patient.name[0]")),
        ({"gender": None}, ("structure", "Patient.gender")),
        ({"maritalStatus": None}, ("structure", "Patient.maritalStatus")),
        ({"birthDate": ""}, ("value", "Patient.birthDate")),
        ({"name": [{"family": ""}]}, ("value", "Patient.name[0].family")),
        ({"name": [{"family": "a\x0bb"}]}, ("value", "Patient.name[0].family")),
    ],
)
def test_empty_and_null_values_are_errors(elements: dict[str, Any], expected: tuple[str, str]) -> None:
    assert issues_of(patient(**elements)) == [expected]


def test_strings_are_limited_to_one_mebibyte() -> None:
    assert validate(patient(name=[{"family": "x" * (1024 * 1024)}])) == []
    too_long = patient(name=[{"family": "x" * (1024 * 1024 + 1)}])
    assert issues_of(too_long) == [("too-long", "Patient.name[0].family")]
    multibyte = patient(name=[{"family": "\u00e9" * (600 * 1024)}])  # 600 Ki chars, 1.2 MiB
    assert issues_of(multibyte) == [("too-long", "Patient.name[0].family")]


def test_no_break_space_is_a_valid_string_character() -> None:
    assert validate(patient(name=[{"family": "van\u00a0Dam"}])) == []


# --- primitive values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        ({"id": "a_b"}, ("value", "Patient.id")),
        ({"id": "x" * 65}, ("value", "Patient.id")),
        ({"id": 1}, ("structure", "Patient.id")),
        ({"active": "true"}, ("structure", "Patient.active")),
        ({"active": 1}, ("structure", "Patient.active")),
        ({"multipleBirthInteger": True}, ("structure", "Patient.multipleBirthInteger")),
        ({"multipleBirthInteger": Decimal("2.0")}, ("structure", "Patient.multipleBirthInteger")),
        ({"multipleBirthInteger": "2"}, ("structure", "Patient.multipleBirthInteger")),
        ({"multipleBirthInteger": 2**31}, ("value", "Patient.multipleBirthInteger")),
        ({"multipleBirthInteger": -(2**31) - 1}, ("value", "Patient.multipleBirthInteger")),
        ({"telecom": [{"value": "1", "rank": 0}]}, ("value", "Patient.telecom[0].rank")),
        ({"photo": [{"size": -1}]}, ("value", "Patient.photo[0].size")),
        ({"photo": [{"data": "not base64!"}]}, ("value", "Patient.photo[0].data")),
        ({"photo": [{"creation": "2020-01-01T10:00"}]}, ("value", "Patient.photo[0].creation")),
        ({"birthDate": "2020-13-01"}, ("value", "Patient.birthDate")),
        ({"birthDate": "1978-3-1"}, ("value", "Patient.birthDate")),
        ({"birthDate": 1974}, ("structure", "Patient.birthDate")),
        ({"meta": {"lastUpdated": "2020-01-01"}}, ("value", "Patient.meta.lastUpdated")),
        ({"implicitRules": "has space"}, ("value", "Patient.implicitRules")),
        ({"language": "en  US"}, ("value", "Patient.language")),
        ({"extension": [{"url": EXTENSION_URL, "valueOid": "urn:oid:1.02"}]},
         ("value", "Patient.extension[0].valueOid")),
        ({"extension": [{"url": EXTENSION_URL, "valueUuid": "urn:uuid:ABC"}]},
         ("value", "Patient.extension[0].valueUuid")),
    ],
)
def test_primitive_values_are_checked(elements: dict[str, Any], expected: tuple[str, str]) -> None:
    assert issues_of(patient(**elements)) == [expected]


@pytest.mark.parametrize("value", [1, -3, Decimal("98.6"), Decimal("1E+3"), 2.5])
def test_decimal_accepts_json_numbers(value: object) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                   "valueQuantity": {"value": value}}
    assert validate(observation) == []


@pytest.mark.parametrize("value", ["98.6", True, Decimal("NaN"), Decimal("Infinity"), float("inf")])
def test_decimal_rejects_everything_else(value: object) -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                   "valueQuantity": {"value": value}}
    assert issues_of(observation) == [("structure", "Observation.valueQuantity.value")]


def test_integer_limits_are_inclusive() -> None:
    assert validate(patient(multipleBirthInteger=2**31 - 1)) == []
    assert validate(patient(multipleBirthInteger=-(2**31))) == []
    assert validate(patient(telecom=[{"value": "1", "rank": 1}], photo=[{"size": 0}])) == []


def test_date_time_and_time_formats() -> None:
    times = {"resourceType": "Location", "hoursOfOperation": [{"openingTime": "08:30:00"}]}
    assert validate(times) == []
    times["hoursOfOperation"] = [{"openingTime": "8:30"}]
    assert issues_of(times) == [("value", "Location.hoursOfOperation[0].openingTime")]
    assert validate(patient(deceasedDateTime="2020-01-01T10:00:00+01:00")) == []
    assert validate(patient(deceasedDateTime="2020-01")) == []


# --- narrative -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("div", "code"),
    [
        ("<p>Peter</p>", "value"),
        ("<div>Peter</div>", "value"),
        ("", "value"),
        ({"div": "x"}, "structure"),
    ],
)
def test_narrative_div_is_an_xhtml_div(div: object, code: str) -> None:
    resource = patient(text={"status": "generated", "div": div})
    assert issues_of(resource) == [(code, "Patient.text.div")]


# --- required bindings -----------------------------------------------------------------------


def test_required_code_binding_is_enforced() -> None:
    assert validate(patient(gender="other")) == []
    assert issues_of(patient(gender="M")) == [("code-invalid", "Patient.gender")]
    where = "Bundle.entry[0].resource.gender"
    assert issues_of(bundle(patient(gender="f"))) == [("code-invalid", where)]
    assert issues_of({"resourceType": "Bundle", "type": "bag"}) == [("code-invalid", "Bundle.type")]


def test_codings_are_not_bound() -> None:
    coding = {"system": "http://example.org/local", "code": "XYZ"}
    assert validate(patient(maritalStatus={"coding": [coding]})) == []


# --- extensions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extension", "expected"),
    [
        ({"valueString": "a"}, ("required", "Patient.extension[0].url")),
        ({"url": EXTENSION_URL}, ("invariant", "Patient.extension[0]")),
        ({"url": EXTENSION_URL, "valueString": "a", "extension": [{"url": "b", "valueCode": "c"}]},
         ("invariant", "Patient.extension[0]")),
        ({"url": EXTENSION_URL, "valueString": "a", "valueCode": "a"},
         ("structure", "Patient.extension[0].valueCode")),
        ({"url": EXTENSION_URL, "valueCode": "a", "valueFoo": "a"},
         ("structure", "Patient.extension[0].valueFoo")),
        ({"url": "has space", "valueString": "a"}, ("value", "Patient.extension[0].url")),
        ({"url": EXTENSION_URL, "_url": {"id": "1"}, "valueString": "a"},
         ("structure", "Patient.extension[0]._url")),
    ],
)
def test_extension_rules(extension: dict[str, Any], expected: tuple[str, str]) -> None:
    assert issues_of(patient(extension=[extension])) == [expected]


def test_nested_extensions_and_modifier_extensions_are_checked() -> None:
    nested = {"url": EXTENSION_URL, "extension": [{"url": "part", "valueQuantity": {"value": 1}}]}
    assert validate(patient(modifierExtension=[nested])) == []
    nested["extension"] = [{"url": "part"}]
    assert issues_of(patient(modifierExtension=[nested])) == [
        ("invariant", "Patient.modifierExtension[0].extension[0]")
    ]


# --- robustness ------------------------------------------------------------------------------


def test_deep_nesting_is_reported_not_raised() -> None:
    extension: dict[str, Any] = {"url": "u", "valueString": "leaf"}
    for _ in range(5000):
        extension = {"url": "u", "extension": [extension]}
    issues = issues_of(patient(extension=[extension]))
    assert ("structure", "$this") in issues


def test_cyclic_input_is_reported_not_raised() -> None:
    name: dict[str, Any] = {"family": "x"}
    resource = patient(name=[name])
    name["extension"] = [{"url": "u", "extension": [{"url": "v", "valueString": "w"}]}]
    name["extension"][0]["extension"][0]["extension"] = name["extension"]
    del name["extension"][0]["extension"][0]["valueString"]
    assert ("structure", "$this") in issues_of(resource)


def test_non_string_keys_are_reported() -> None:
    resource: dict[Any, Any] = patient()
    resource[1] = "x"
    resource[None] = "y"
    assert issues_of(resource) == [("structure", "Patient"), ("structure", "Patient")]


def test_diagnostics_never_repeat_the_value() -> None:
    secret = "Peter Chalmers 1974-12-25"
    resource = patient(
        id=secret, gender=secret, birthDate=secret, active=secret, multipleBirthInteger=secret,
        name=[{"family": secret * 100000, "given": secret}],
        text={"status": secret, "div": secret},
    )
    issues = validate(resource)
    assert len(issues) == 9
    assert all(secret not in issue.diagnostics for issue in issues)
