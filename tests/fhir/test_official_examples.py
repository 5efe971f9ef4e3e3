"""The official R4 material validates: the spec's examples and every resource of the core package.

Third-party fixtures that break R4 rules are reported exactly where they break them.
"""

from __future__ import annotations

import json
import tarfile
from decimal import Decimal
from pathlib import Path

import pytest

from ehr.fhir.validator import validate
from tests.fhir.shared import CONFORMANCE, R4_PACKAGE, load_json, require

TESTSCRIPTS = CONFORMANCE / "testscripts"
OFFICIAL_DIRS = [
    CONFORMANCE / "fhir-examples",                  # hl7.fhir.r4.examples 4.0.1
    TESTSCRIPTS / "hl7-r4-spec",                    # TestScripts and TestReport of the R4 examples
    TESTSCRIPTS / "fixtures" / "hl7-r4-spec",
]
OFFICIAL = sorted(path for folder in OFFICIAL_DIRS if folder.is_dir() for path in folder.glob("*.json"))

# Resources of hl7.fhir.r4.core 4.0.1 that break R4 itself, with the one issue each has.
_NO_BASE = "SearchParameter missing `base` (1..*) in the published package"
KNOWN_INVALID_IN_PACKAGE: dict[str, tuple[str, str, str]] = {
    **{
        f"SearchParameter-{name}.json": ("required", "SearchParameter.base", _NO_BASE)
        for name in [
            "codesystem-extensions-CodeSystem-author",
            "codesystem-extensions-CodeSystem-effective",
            "codesystem-extensions-CodeSystem-end",
            "codesystem-extensions-CodeSystem-keyword",
            "codesystem-extensions-CodeSystem-workflow",
            "valueset-extensions-ValueSet-author",
            "valueset-extensions-ValueSet-effective",
            "valueset-extensions-ValueSet-end",
            "valueset-extensions-ValueSet-keyword",
            "valueset-extensions-ValueSet-workflow",
        ]
    },
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json": (
        "value", "SearchParameter.id", "id is 67 characters; R4 ids are 1..64"
    ),
}

# Fixtures shipped with fhir-crucible/testscript-engine (not HL7's), checked issue by issue.
THIRD_PARTY: dict[str, list[tuple[str, str]]] = {
    "fixtures/crucible-engine/Observation/example.json": [],
    "fixtures/crucible-engine/Observation/example2.json": [],
    "fixtures/crucible-engine/Patient/example.json": [],
    "fixtures/crucible-engine/Patient/example_min.json": [],
    # "1978-3-1": months and days need two digits
    "fixtures/crucible-engine/Patient/example2.json": [
        ("value", "Patient.birthDate"),
        ("value", "Patient.birthDate.extension[0].valueDateTime"),
    ],
    # a narrative with a status but no div
    "fixtures/crucible-engine/Patient/example_bundle_entry.json": [("required", "Patient.text.div")],
    "fixtures/crucible-engine/Patient/example_bundle.json": [
        ("required", "Bundle.entry[0].resource.text.div")
    ],
    # "testscript_fhirpath_test": "_" is not allowed in an id
    "crucible-engine/testscript_fhirpath_test.json": [("value", "TestScript.id")],
}


@pytest.mark.parametrize("path", OFFICIAL or [OFFICIAL_DIRS[0]], ids=lambda path: path.name)
def test_official_r4_example_is_valid(path: Path) -> None:
    assert validate(load_json(require(path))) == []


def test_all_official_examples_are_present() -> None:
    require(OFFICIAL_DIRS[0])
    assert len(OFFICIAL) >= 91 + 7 + 2


def test_every_resource_of_the_core_package_is_valid_except_known_errata() -> None:
    found: dict[str, list[tuple[str, str]]] = {}
    count = 0
    with tarfile.open(require(R4_PACKAGE), "r:gz") as archive:
        for member in archive:
            name = member.name.removeprefix("package/")
            handle = archive.extractfile(member)
            if "/" in name or not name.endswith(".json") or name.startswith(".") or handle is None:
                continue
            if name == "package.json":
                continue
            count += 1
            issues = validate(json.load(handle, parse_float=Decimal))
            if issues:
                found[name] = [(issue.code, issue.expression) for issue in issues]
    assert count > 4500
    assert found == {name: [known[:2]] for name, known in KNOWN_INVALID_IN_PACKAGE.items()}


@pytest.mark.parametrize("name", sorted(THIRD_PARTY))
def test_third_party_fixture_is_judged_issue_by_issue(name: str) -> None:
    issues = validate(load_json(require(TESTSCRIPTS / name)))
    assert [(issue.code, issue.expression) for issue in issues] == THIRD_PARTY[name]
