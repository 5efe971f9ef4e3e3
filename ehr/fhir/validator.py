"""Structural validation of FHIR R4 (4.0.1) resources in their JSON form.

Spec: http://hl7.org/fhir/R4/json.html, http://hl7.org/fhir/R4/datatypes.html.

:func:`validate` walks a parsed resource against tables compiled from the official
StructureDefinitions (:mod:`ehr.fhir.definitions`) and reports every problem as an
:class:`Issue`. It checks:

* a known ``resourceType`` at the top and on every nested resource (``contained``,
  ``Bundle.entry.resource``, ``Parameters.parameter.resource``...), validated recursively;
* element names (unknown ones are errors), cardinality (min; ``max=1`` is never an array,
  ``max=*`` always is), one variant per choice element (``value[x]``);
* primitive values: JSON type, R4 regex, integer ranges, 1 MiB strings, narrative shape,
  REQUIRED bindings on ``code`` elements whose value set the package enumerates;
* ``_name`` siblings of primitives (json.html#primitive), ele-1 (no empty objects,
  arrays or strings, no null outside paired primitive arrays) and ext-1 (an extension has
  a value or extensions, not both).

Not checked: other FHIRPath invariants (dom-*, ref-*...), reference targets, profiles,
extensible/preferred bindings, and XHTML content beyond its outer ``<div>`` (see
:mod:`ehr.fhir.primitives`). Input nested deeper than Python's recursion limit allows
(a few hundred levels) is reported as one ``structure`` issue at ``$this``; bound the
nesting depth in the JSON parser.

Issue codes: ``structure`` (wrong JSON shape or unknown element), ``required`` (missing
element), ``value`` (bad primitive value), ``too-long``, ``code-invalid`` (not in a
required value set), ``invariant`` (ele-1 empty object, ext-1). Diagnostics never repeat
input values; expressions are FHIRPath-like (``Bundle.entry[2].resource.name[0].given[1]``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ehr.fhir.definitions import ComplexType, Element, definitions

__all__ = ["RESOURCE_TYPES", "Issue", "validate"]

RESOURCE_TYPES: frozenset[str]  # all concrete R4 resource type names (module __getattr__ below)

_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9]{0,63}")
Json = dict[Any, object]


@dataclass(frozen=True, slots=True)
class Issue:
    code: str         # "structure" | "required" | "value" | "code-invalid" | "invariant" | "too-long"
    expression: str   # FHIRPath-like location, e.g. "Patient.name[0].given[1]"
    diagnostics: str  # what is wrong and what is expected; never the offending value
    severity: str = "error"


def validate(resource: object) -> list[Issue]:
    """All structural problems of ``resource`` (any JSON-like value); ``[]`` means valid."""
    issues: list[Issue] = []
    try:
        _resource(resource, "", issues)
    except RecursionError:
        issues.append(Issue("structure", "$this", "the resource is nested too deeply"))
    return issues


def __getattr__(name: str) -> object:
    """RESOURCE_TYPES, read from the tables on first access (PEP 562) so importing is cheap."""
    if name == "RESOURCE_TYPES":
        return definitions().resource_types
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _resource(value: object, path: str, issues: list[Issue]) -> None:
    if not isinstance(value, dict):
        issues.append(Issue("structure", path or "$this", "expected a resource (JSON object)"))
        return
    name = value.get("resourceType")
    kind = definitions().resources.get(name) if isinstance(name, str) else None
    if kind is not None:
        _object(value, kind, path or kind.name, issues, resource=True)
        return
    where = f"{path}.resourceType" if path else "resourceType"
    if name is None:
        issues.append(Issue("required", where, "resourceType is required"))
    else:
        issues.append(Issue("structure", where, "resourceType must name an R4 resource type"))


def _object(obj: Json, kind: ComplexType, path: str, issues: list[Issue],
            resource: bool = False) -> None:
    if not obj:
        issues.append(Issue("invariant", path, "empty objects are not allowed (ele-1)"))
        return
    elements = kind.elements
    choices: dict[str, str] = {}
    for key, value in obj.items():
        element = elements.get(key)
        if element is None:
            element = _unlisted(obj, key, value, kind, path, issues, resource)
            if element is not None and element.choice is not None:
                _choose(choices, element.choice, key[1:], path, issues)
            continue
        if element.choice is not None and not _choose(choices, element.choice, key, path, issues):
            continue
        if element.many:
            _array(obj, key, value, element, path, issues)
        elif isinstance(value, list):
            issues.append(Issue("structure", f"{path}.{key}", "must be a single value, not an array"))
        else:
            _value(element, value, path, key, -1, issues)
    if kind.required or kind.required_choices:
        _required(obj, kind, choices, path, issues)
    if kind.name == "Extension" and ("extension" in obj) == ("value" in choices):
        message = "an extension must have either extensions or value[x], not both (ext-1)"
        issues.append(Issue("invariant", path, message))


def _choose(choices: dict[str, str], group: str, name: str, path: str, issues: list[Issue]) -> bool:
    """Record ``name`` as the variant of choice ``group``; False if another one was chosen."""
    chosen = choices.setdefault(group, name)
    if chosen == name:
        return True
    issues.append(Issue("structure", f"{path}.{name}", f"only one {group}[x] variant is allowed"))
    return False


def _array(obj: Json, key: str, value: object, element: Element, path: str, issues: list[Issue]) -> None:
    if not isinstance(value, list):
        issues.append(Issue("structure", f"{path}.{key}", "must be an array"))
        return
    if not value:
        issues.append(Issue("structure", f"{path}.{key}", "empty arrays are not allowed (ele-1)"))
        return
    primitive = element.check is not None
    for index, item in enumerate(value):
        if item is None and primitive and _has_extension(obj, key, index):
            continue
        _value(element, item, path, key, index, issues)


def _value(element: Element, value: object, path: str, key: str, index: int,
           issues: list[Issue]) -> None:
    check = element.check
    if value is None:
        issues.append(Issue("structure", _at(path, key, index), "null is not allowed here"))
    elif check is not None:
        problem = check(value)
        if problem is not None:
            issues.append(Issue(problem[0], _at(path, key, index), problem[1]))
        elif element.codes is not None and value not in element.codes:
            message = f"code is not in the required value set {element.value_set}"
            issues.append(Issue("code-invalid", _at(path, key, index), message))
    elif element.complex is not None:
        if isinstance(value, dict):
            _object(value, element.complex, _at(path, key, index), issues)
        else:
            message = f"expected a JSON object ({element.type_name})"
            issues.append(Issue("structure", _at(path, key, index), message))
    else:
        _resource(value, _at(path, key, index), issues)


def _required(obj: Json, kind: ComplexType, choices: dict[str, str], path: str,
              issues: list[Issue]) -> None:
    for name in kind.required:
        if name not in obj and "_" + name not in obj:
            issues.append(Issue("required", f"{path}.{name}", f"{name} is required"))
    for group in kind.required_choices:
        if group not in choices:
            issues.append(Issue("required", f"{path}.{group}[x]", f"{group}[x] is required"))


def _unlisted(obj: Json, key: object, value: object, kind: ComplexType, path: str,
              issues: list[Issue], resource: bool) -> Element | None:
    """A property that is not an element of ``kind``: resourceType, ``_name`` or unknown.

    Returns the primitive element that a valid ``_name`` sibling belongs to."""
    if resource and key == "resourceType":
        return None
    if not isinstance(key, str) or _NAME.fullmatch(key) is None:
        message = f"a property name is not a valid element name of {kind.name}"
        issues.append(Issue("structure", path, message))
        return None
    element = kind.elements.get(key[1:]) if key.startswith("_") else None
    if element is None or not element.extensible:
        issues.append(Issue("structure", f"{path}.{key}", f"unknown element for {kind.name}"))
        return None
    if element.many:
        _extension_array(obj, key[1:], value, path, issues)
    elif isinstance(value, dict):
        _object(value, definitions().primitive_element, f"{path}.{key[1:]}", issues)
    else:
        issues.append(Issue("structure", f"{path}.{key}", "must be an object with id and/or extension"))
    return element


def _extension_array(obj: Json, name: str, value: object, path: str, issues: list[Issue]) -> None:
    """``_name`` of a repeating primitive: an array aligned with ``name`` (json.html#primitive)."""
    values = obj.get(name)
    if not isinstance(value, list) or not value:
        issues.append(Issue("structure", f"{path}._{name}", "must be a non-empty array"))
        return
    if values is not None and (not isinstance(values, list) or len(values) != len(value)):
        issues.append(Issue("structure", f"{path}._{name}", f"must have as many items as {name}"))
        return
    content = definitions().primitive_element
    for index, item in enumerate(value):
        if isinstance(item, dict):
            _object(item, content, f"{path}.{name}[{index}]", issues)
        elif item is not None:
            issues.append(Issue("structure", f"{path}.{name}[{index}]", "expected an object or null"))
        elif values is None:
            issues.append(Issue("structure", f"{path}.{name}[{index}]", "null is not allowed here"))


def _has_extension(obj: Json, key: str, index: int) -> bool:
    extensions = obj.get("_" + key)
    return isinstance(extensions, list) and index < len(extensions) and extensions[index] is not None


def _at(path: str, key: str, index: int) -> str:
    return f"{path}.{key}" if index < 0 else f"{path}.{key}[{index}]"
