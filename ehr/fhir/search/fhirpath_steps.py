"""The closures that compiled FHIRPath is made of: one per navigation step or operator.

Each is an :data:`Evaluate`, ``(nodes, %resource) -> nodes``; a node is ``(json_value, fhir_type)``.
Booleans follow FHIRPath's collection semantics (fhirpath.html#boolean-logic): an empty
collection is "unknown", a single ``true``/``false`` is a boolean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ehr.fhir.search import fhirtypes

Node = tuple[Any, str]
Nodes = list[Node]
Json = dict[str, Any]
Evaluate = Callable[[Nodes, Json], Nodes]  # (focus, %resource) -> result
Key = tuple[str, bool, str]  # JSON property, is an array, FHIR type

TRUE: Nodes = [(True, "boolean")]
FALSE: Nodes = [(False, "boolean")]


def identity(focus: Nodes, resource: Json) -> Nodes:
    return focus


def then(first: Evaluate, step: Evaluate) -> Evaluate:
    if first is identity:
        return step
    return lambda focus, resource: step(first(focus, resource), resource)


def members(keys: tuple[Key, ...]) -> Evaluate:
    """Child elements: one JSON property, or the present variants of a choice (``value[x]``)."""
    if len(keys) == 1:
        return _member(*keys[0])

    def step(nodes: Nodes, resource: Json) -> Nodes:
        out: Nodes = []
        for value, _ in nodes:
            for key, many, type_name in keys:
                found = value.get(key)
                if found is not None:
                    out.extend([(i, type_name) for i in found if i is not None] if many else [(found, type_name)])
        return out

    return step


def _member(key: str, many: bool, type_name: str) -> Evaluate:
    if not many:
        return lambda nodes, resource: [(v, type_name) for value, _ in nodes if (v := value.get(key)) is not None]

    def step(nodes: Nodes, resource: Json) -> Nodes:
        # ``null`` items pair a primitive array with its ``_name`` extensions (json.html#primitive)
        return [(item, type_name) for value, _ in nodes for item in value.get(key, ()) if item is not None]

    return step


def dispatch(steps: dict[str, Evaluate]) -> Evaluate:
    """A step that depends on each node's type (navigation after an untyped choice or union)."""

    def step(nodes: Nodes, resource: Json) -> Nodes:
        out: Nodes = []
        for node in nodes:
            member = steps.get(node[1])
            if member is not None:
                out.extend(member([node], resource))
        return out

    return step


def keep_types(accepted: frozenset[str]) -> Evaluate:
    return lambda nodes, resource: [n for n in nodes if n[1] in accepted]


def where(condition: Evaluate) -> Evaluate:
    return lambda nodes, resource: [n for n in nodes if condition([n], resource) == TRUE]


def where_equals(key: str, literal: str) -> Evaluate:
    """``where(key = 'literal')`` on a single-valued string element: equal, or absent (false)."""
    return lambda nodes, resource: [n for n in nodes if n[0].get(key) == literal]


def extensions(url: str) -> Evaluate:
    """``extension(url)`` on complex values (fhir: fhirpath.html#functions)."""
    return lambda nodes, resource: [
        (x, "Extension") for value, _ in nodes for x in value.get("extension", ()) if x.get("url") == url
    ]


def exists(nodes: Nodes, resource: Json) -> Nodes:
    return TRUE if nodes else FALSE


def resolve(nodes: Nodes, resource: Json) -> Nodes:
    """``resolve()`` without a server: only the target's type, read from the reference."""
    found = ((None, fhirtypes.reference_type(value)) for value, _ in nodes)
    return [(value, kind) for value, kind in found if kind is not None]


def is_type(accepted: frozenset[str]) -> Evaluate:
    return lambda nodes, resource: ([] if len(nodes) != 1 else TRUE if nodes[0][1] in accepted else FALSE)


def _truth(nodes: Nodes) -> bool | None:
    return bool(nodes[0][0]) if len(nodes) == 1 and nodes[0][1] == "boolean" else None


def both(left: Nodes, right: Nodes) -> Nodes:
    """Three-valued ``and``."""
    a, b = _truth(left), _truth(right)
    if a is False or b is False:
        return FALSE
    return TRUE if a and b else []


def equal(left: Nodes, right: Nodes) -> Nodes:
    """``=`` (fhirpath.html#equality): empty when either side is; items compared in order."""
    if not left or not right:
        return []
    same = len(left) == len(right) and all(
        type(a[0]) is type(b[0]) and a[0] == b[0] for a, b in zip(left, right, strict=True)
    )
    return TRUE if same else FALSE


def not_equal(left: Nodes, right: Nodes) -> Nodes:
    result = equal(left, right)
    return result and (FALSE if result == TRUE else TRUE)
