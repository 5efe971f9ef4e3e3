"""Narrower choices offered on the consent page (ONC (g)(10) "granular scope selection", SMART
2.x v2 scopes): when an app asks for a resource-level scope on Condition or Observation, the
person may grant it only for some categories instead. The categories are those the ONC test kit
uses (US Core 6/7): the R4 core code systems plus US Core's own."""

from __future__ import annotations

from types import MappingProxyType

from smart_auth.scopes import Grant, Permissions

_OBSERVATION = "http://terminology.hl7.org/CodeSystem/observation-category"
_CONDITION = "http://terminology.hl7.org/CodeSystem/condition-category"
_US_CORE = "http://hl7.org/fhir/us/core/CodeSystem/"

CATEGORIES: MappingProxyType[str, tuple[tuple[str, str], ...]] = MappingProxyType({
    "Condition": (
        (_CONDITION, "encounter-diagnosis"), (_CONDITION, "problem-list-item"),
        (_US_CORE + "condition-category", "health-concern"),
    ),
    "Observation": (
        (_OBSERVATION, "laboratory"), (_OBSERVATION, "social-history"), (_OBSERVATION, "vital-signs"),
        (_OBSERVATION, "survey"), (_US_CORE + "us-core-category", "sdoh"),
        (_US_CORE + "us-core-category", "clinical-test"),
    ),
})


def narrower(offered: Permissions) -> list[str]:
    """Category scopes under each resource-level read/search grant of ``offered`` (not already offered)."""
    choices: list[str] = []
    present = {g.scope() for g in offered.grants}
    for grant in offered.grants:
        if grant.query is not None or not grant.letters & {"r", "s"}:
            continue
        letters = frozenset(grant.letters & {"r", "s"})
        for system, code in CATEGORIES.get(grant.resource_type, ()):
            scope = Grant(grant.context, grant.resource_type, letters, f"category={system}|{code}").scope()
            if scope not in present and scope not in choices:
                choices.append(scope)
    return choices
