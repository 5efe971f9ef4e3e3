"""The R4 search parameters of each resource type, from ``data/r4_search.json``.

That table is compiled from the official SearchParameters by ``scripts/gen_r4_search.py`` (which
leaves out what cannot be indexed and says why); nothing under ``/work/shared`` is read at run
time. Expressions are compiled to closures per resource type on first use.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

from ehr.fhir.search import fhirtypes
from ehr.fhir.search.fhirpath import Compiled, compile_path
from ehr.fhir.search.values import Component, ParamDef, ParamType

__all__ = ["CompiledParam", "compiled", "params", "patient_compartment_params"]

TABLE = "r4_search.json"
ANY_RESOURCE = "Resource"  # base of _id, _lastUpdated, _tag, _profile, _security, _source
_EMPTY: Mapping[str, ParamDef] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CompiledParam:
    param: ParamDef
    path: Compiled                       # the elements, from the resource
    components: tuple[Compiled, ...]     # composite: each component, from one of those elements


@functools.cache
def _table() -> dict[str, Any]:
    text = resources.files("ehr.fhir").joinpath("data", TABLE).read_text(encoding="ascii")
    return cast(dict[str, Any], json.loads(text))


def params(resource_type: str) -> Mapping[str, ParamDef]:
    """Code -> definition of every parameter usable on ``resource_type`` (the ``Resource``-level
    ones included); empty for an unknown type."""
    if resource_type not in fhirtypes.resource_types():
        return _EMPTY
    return _params(resource_type)


@functools.cache
def _params(resource_type: str) -> Mapping[str, ParamDef]:
    entries = [*_table()["params"][ANY_RESOURCE], *_table()["params"].get(resource_type, [])]
    return MappingProxyType({entry["code"]: _param(entry) for entry in entries})


def _param(entry: dict[str, Any]) -> ParamDef:
    return ParamDef(
        code=entry["code"],
        type=cast(ParamType, entry["type"]),
        url=entry["url"],
        expression=entry["expression"],
        targets=tuple(entry.get("targets", ())),
        components=tuple(
            Component(c["code"], cast(ParamType, c["type"]), c["expression"]) for c in entry.get("components", ())
        ),
        description=entry["description"],
    )


@functools.cache
def patient_compartment_params(resource_type: str) -> tuple[str, ...]:
    """The parameters that place a ``resource_type`` in a Patient's compartment
    (compartmentdefinition-patient.html); ``()`` when it never is in one."""
    return tuple(_table()["compartments"]["Patient"].get(resource_type, ()))


@functools.cache
def compiled(resource_type: str) -> tuple[CompiledParam, ...]:
    """Every parameter of ``resource_type`` with its expressions compiled, in code order."""
    return tuple(_compile(param, resource_type) for _, param in sorted(params(resource_type).items()))


def _compile(param: ParamDef, resource_type: str) -> CompiledParam:
    path = compile_path(param.expression, (resource_type,), resource_type)
    parts = tuple(compile_path(c.expression, path.types, resource_type) for c in param.components)
    return CompiledParam(param, path, parts)
