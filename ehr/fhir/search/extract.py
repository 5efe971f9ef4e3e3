"""What a resource is indexed under: (parameter code, value) for each search parameter of its type.

Spec: http://hl7.org/fhir/R4/search.html (what each parameter type matches) and
http://hl7.org/fhir/R4/compartmentdefinition-patient.html. The parameters and their compiled
expressions come from :mod:`ehr.fhir.search.definitions`; the element types the expressions yield
pick the converter (:mod:`ehr.fhir.search.convert`). This runs on every write, so the work per
resource type (compiling, choosing converters) is done once and cached.

Input must have passed :func:`ehr.fhir.validator.validate`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from typing import Any

from ehr.fhir.search.convert import Convert, converters
from ehr.fhir.search.definitions import CompiledParam, compiled, patient_compartment_params
from ehr.fhir.search.fhirpath import Evaluate, Keys, Nodes
from ehr.fhir.search.fhirpath_steps import identity
from ehr.fhir.search.fhirtypes import reference_parts
from ehr.fhir.search.values import CompositeValue, ReferenceValue, Value

__all__ = ["extract", "patient_compartment"]

Json = dict[str, Any]
Indexed = Value | CompositeValue
_Part = tuple[Evaluate, Mapping[str, Convert]]
_Indexer = tuple[str, Evaluate, Mapping[str, Convert], tuple[_Part, ...]]
_Memo = dict[tuple[int, int], list[Value]]


def extract(resource: Json) -> list[tuple[str, Indexed]]:
    """Every (code, value) ``resource`` is indexed under, without duplicates, in code order."""
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return []
    indexers, by_key, always = _plan(kind)
    selected = set(always)
    for key in resource:
        selected.update(by_key.get(key, ()))
    focus: Nodes = [(resource, kind)]
    found: list[tuple[str, Indexed]] = []
    memo: _Memo = {}
    for code, path, convert, parts in [indexers[i] for i in sorted(selected)]:
        nodes = path(focus, resource)
        if not nodes:
            continue
        values = _composites(nodes, parts, resource, memo) if parts else _convert(nodes, convert, memo)
        found.extend([(code, value) for value in values])
    return list(dict.fromkeys(found))


def patient_compartment(resource: Json) -> frozenset[str]:
    """Ids of the Patients whose compartment ``resource`` is in: the Patients that its compartment
    parameters reference (``Patient/x`` or ``.../Patient/x``; never ``urn:uuid:``), and a Patient's
    own id."""
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return frozenset()
    ids = {resource["id"]} if kind == "Patient" and isinstance(resource.get("id"), str) else set()
    focus: Nodes = [(resource, kind)]
    for _, path, convert, _ in _compartment_indexers(kind):
        for value in _convert(path(focus, resource), convert, {}):
            parts = reference_parts(value.reference) if isinstance(value, ReferenceValue) else None
            if parts is not None and parts[0] == "Patient":
                ids.add(parts[1])
    return frozenset(ids)


def _convert(nodes: Nodes, convert: Mapping[str, Convert], memo: _Memo) -> list[Value]:
    """The values of the nodes. ``memo`` holds the conversions done for this resource: several
    parameters index the same element (``code``, ``combo-code``, ``code-value-quantity``...).
    Keying by ``id`` is sound because every node is part of the resource, alive until the end."""
    values: list[Value] = []
    for value, type_name in nodes:
        converter = convert.get(type_name)
        if converter is not None:
            key = (id(value), id(converter))
            done = memo.get(key)
            if done is None:
                done = memo[key] = converter(value)
            values.extend(done)
    return values


def _composites(nodes: Nodes, parts: tuple[_Part, ...], resource: Json, memo: _Memo) -> list[Indexed]:
    """For each element, the cross product of its components' values (search.html#composite)."""
    found: list[Indexed] = []
    for node in nodes:
        columns: list[list[Value]] = []
        for path, convert in reversed(parts):  # the value part is the one most often absent
            column = _convert(path([node], resource), convert, memo)
            if not column:
                break
            columns.insert(0, column)
        else:
            found.extend(CompositeValue(combination) for combination in itertools.product(*columns))
    return found


@functools.cache
def _plan(resource_type: str) -> tuple[tuple[_Indexer, ...], dict[str, tuple[int, ...]], frozenset[int]]:
    """The indexers, which of them each top-level JSON key can feed, and those to run always: a
    resource has only a few of the dozens of elements its parameters read."""
    by_key: dict[str, list[int]] = {}
    always: set[int] = set()
    for number, entry in enumerate(compiled(resource_type)):
        keys = _needed_keys(entry)
        if keys is None:
            always.add(number)
        for key in keys or ():
            by_key.setdefault(key, []).append(number)
    return _indexers(resource_type), {k: tuple(v) for k, v in by_key.items()}, frozenset(always)


def _needed_keys(entry: CompiledParam) -> Keys:
    """Top-level keys one of which ``entry`` needs; for a composite on the resource itself
    (``Observation``: code and value), those of any one component will do: the last one, the
    value, is the most telling."""
    if entry.path.keys is not None or not entry.components or entry.path.evaluate is not identity:
        return entry.path.keys
    return next((c.keys for c in reversed(entry.components) if c.keys is not None), None)


@functools.cache
def _indexers(resource_type: str) -> tuple[_Indexer, ...]:
    return tuple(_indexer(entry) for entry in compiled(resource_type))


def _indexer(entry: CompiledParam) -> _Indexer:
    definitions = entry.param.components
    parts = tuple((part.evaluate, converters(c.type)) for part, c in zip(entry.components, definitions, strict=True))
    return entry.param.code, entry.path.evaluate, converters(entry.param.type), parts


@functools.cache
def _compartment_indexers(resource_type: str) -> tuple[_Indexer, ...]:
    codes = set(patient_compartment_params(resource_type))
    return tuple(indexer for indexer in _indexers(resource_type) if indexer[0] in codes)
