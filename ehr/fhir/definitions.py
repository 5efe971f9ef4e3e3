"""The FHIR R4 (4.0.1) structure tables, loaded once and linked for dict-lookup validation.

``data/r4_definitions.json`` is compiled from the official StructureDefinitions by
``scripts/gen_r4_tables.py``; nothing under ``/work/shared`` is read at run time. Every
complex type (resource, datatype, backbone element named by its path such as
``Patient.contact``) becomes a :class:`ComplexType` whose elements map the JSON property
name (choices expanded: ``valueQuantity``) to an :class:`Element` that points straight at
its primitive checker or complex type.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import TypedDict, cast

from ehr.fhir.primitives import Checker, PrimitiveTable, checker

TABLE = "r4_definitions.json"
RESOURCE = "Resource"  # element type of contained[], Bundle.entry.resource, ...


class ElementTable(TypedDict, total=False):
    min: int
    max: str
    type: str
    binding: str
    choice: str
    attribute: bool
    summary: bool


class Table(TypedDict):
    fhirVersion: str
    primitives: dict[str, PrimitiveTable]
    resources: list[str]
    types: dict[str, dict[str, ElementTable]]
    valuesets: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Element:
    """One JSON property of a complex type. Exactly one of ``check``/``complex`` is set,
    or neither for an element holding a whole resource."""

    type_name: str
    many: bool                          # max is "*": a JSON array
    check: Checker | None               # primitive value checker
    complex: ComplexType | None         # datatype or backbone element
    codes: frozenset[str] | None        # required binding on a code element: its codes
    value_set: str | None               # ... and its canonical URL
    choice: str | None                  # "value" for valueString, valueQuantity, ...
    extensible: bool                    # primitive that may have a "_name" sibling
    summary: bool = False               # isSummary: kept by _summary=true


@dataclass(frozen=True, slots=True)
class ComplexType:
    name: str
    elements: dict[str, Element]        # filled once while linking, then only read
    required: tuple[str, ...]           # names with min >= 1 (not choices)
    required_choices: tuple[str, ...]   # choice groups with min >= 1


@dataclass(frozen=True, slots=True)
class Definitions:
    resources: dict[str, ComplexType]
    resource_types: frozenset[str]
    primitives: dict[str, Checker]
    primitive_element: ComplexType      # the content of a "_name" sibling: id, extension


@functools.cache
def definitions() -> Definitions:
    """The linked tables; read from the package on first use."""
    text = resources.files("ehr.fhir").joinpath("data", TABLE).read_text(encoding="ascii")
    return link(cast(Table, json.loads(text)))


def link(table: Table) -> Definitions:
    checkers = {name: checker(name, entry) for name, entry in table["primitives"].items()}
    value_sets = {url: frozenset(codes) for url, codes in table["valuesets"].items()}
    types = {name: _empty_type(name, elements) for name, elements in table["types"].items()}
    for name, elements in table["types"].items():
        for key, entry in elements.items():
            types[name].elements[key] = _element(entry, checkers, types, value_sets)
    element = _empty_type("Element", {})
    element.elements["id"] = _element(
        {"min": 0, "max": "1", "type": "string", "attribute": True}, checkers, types, value_sets
    )
    element.elements["extension"] = types["Extension"].elements["extension"]
    resource_types = frozenset(table["resources"])
    return Definitions({name: types[name] for name in resource_types}, resource_types, checkers, element)


def _empty_type(name: str, elements: dict[str, ElementTable]) -> ComplexType:
    required = sorted(k for k, e in elements.items() if e["min"] > 0 and "choice" not in e)
    choices = sorted({e["choice"] for e in elements.values() if e["min"] > 0 and "choice" in e})
    return ComplexType(name, {}, tuple(required), tuple(choices))


def _element(
    entry: ElementTable,
    checkers: dict[str, Checker],
    types: dict[str, ComplexType],
    value_sets: dict[str, frozenset[str]],
) -> Element:
    type_name = entry["type"]
    check = checkers.get(type_name)
    binding = entry.get("binding")
    return Element(
        type_name=type_name,
        many=entry["max"] != "1",
        check=check,
        complex=types.get(type_name),
        codes=value_sets[binding] if binding else None,
        value_set=binding,
        choice=entry.get("choice"),
        extensible=check is not None and not entry.get("attribute", False) and type_name != "xhtml",
        summary=entry.get("summary", False),
    )
