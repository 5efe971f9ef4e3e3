"""The FHIR R4 type system as FHIRPath sees it, from the validator's tables.

FHIRPath type tests (``is``, ``as``, ``ofType``; fhirpath.html#types) accept a value of the named
type or of a specialisation of it: an ``Age`` is a ``Quantity``, a ``code`` is a ``string``
(http://hl7.org/fhir/R4/datatypes.html, the type hierarchy), every resource is a ``Resource``.
References are typed by their target (``resolve()``), read from the reference itself.
"""

from __future__ import annotations

import functools
from typing import Any

from ehr.fhir.definitions import ComplexType, definitions

RESOURCE = "Resource"
QUANTITIES = frozenset({"Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity"})
_SPECIALISATIONS = {
    "Quantity": QUANTITIES,
    "string": frozenset({"string", "code", "id", "markdown"}),
    "uri": frozenset({"uri", "url", "canonical", "oid", "uuid"}),
    "integer": frozenset({"integer", "positiveInt", "unsignedInt"}),
}


@functools.cache
def complex_types() -> dict[str, ComplexType]:
    """Every resource, datatype and backbone element (``Observation.component``) by name."""
    found: dict[str, ComplexType] = {}
    stack = list(definitions().resources.values())
    while stack:
        kind = stack.pop()
        if kind.name not in found:
            found[kind.name] = kind
            stack.extend(e.complex for e in kind.elements.values() if e.complex is not None)
    return found


def resource_types() -> frozenset[str]:
    return definitions().resource_types


@functools.cache
def type_names() -> frozenset[str]:
    """Names a type specifier may use: resources, datatypes, primitives, the abstract bases."""
    named = {name for name in complex_types() if "." not in name}
    return frozenset(named | set(definitions().primitives) | {RESOURCE, "DomainResource"} | QUANTITIES)


def type_name(name: str) -> str:
    """``name`` as a known type. ``DateTime`` (an erratum in Observation-code-value-date) is read
    as the primitive ``dateTime``; FHIRPath type names are otherwise case-sensitive."""
    if name in type_names():
        return name
    lowered = name[:1].lower() + name[1:]
    if lowered in definitions().primitives:
        return lowered
    raise KeyError(name)


def accepted(name: str) -> frozenset[str]:
    """The runtime type names that ``is name`` accepts."""
    if name in (RESOURCE, "DomainResource"):
        return resource_types() | {RESOURCE}
    return _SPECIALISATIONS.get(name, frozenset({name}))


def reference_type(reference: dict[str, Any]) -> str | None:
    """The target type of a Reference: from its ``reference`` (:func:`reference_parts`), else
    from ``Reference.type`` (a type name, or a URL relative to .../StructureDefinition/)."""
    text = reference.get("reference")
    parts = reference_parts(text) if isinstance(text, str) else None
    if parts is not None:
        return parts[0]
    declared = reference.get("type")
    if isinstance(declared, str):
        name = declared.rsplit("/", 1)[-1]
        return name if name in resource_types() else None
    return None


def reference_parts(text: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference, relative (``Patient/1``) or absolute (the last two
    segments of ``https://x/fhir/Patient/1``), an optional ``/_history/n`` after it; None for
    ``#contained``, ``urn:uuid:`` and anything not ending in a known ``Type/id``
    (references.html#literal)."""
    if text.startswith(("#", "urn:")):
        return None
    parts = text.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-1] and parts[-2] in resource_types():
        return parts[-2], parts[-1]
    return None
