"""The result parameters (https://hl7.org/fhir/R4/search.html#return): what comes back, not what matches.

``_count`` is clamped to the server's maximum (search.html#count: the server may return fewer);
``_format`` and ``_pretty`` belong to the HTTP layer and are skipped here; ``_contained`` and
``_containedType`` are refused. The single-valued ones may appear once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar, get_args

from ehr.fhir.search.model import Include, Search, SortKey, Summary, Total
from ehr.fhir.search.parse_values import MAX_VALUES, Scope, cap, check_target, invalid
from ehr.fhir.search.values import ParamDef

SKIPPED = frozenset({"_format", "_pretty"})
UNSUPPORTED = frozenset({"_contained", "_containedType"})
_SINGLE = frozenset({"_count", "_sort", "_summary", "_elements", "_total", "_cursor"})
_INCLUDES = frozenset({"_include", "_revinclude"})
NAMES = SKIPPED | UNSUPPORTED | _SINGLE | _INCLUDES

_ITERATE = frozenset({"iterate", "recurse"})  # "recurse" is the pre-R4 spelling of :iterate
_SUMMARIES: dict[str, Summary] = {summary: summary for summary in get_args(Summary)}
_TOTALS: dict[str, Total] = {total: total for total in get_args(Total)}
_UNSORTABLE = frozenset({"reference", "composite", "special"})

T = TypeVar("T")


def parse_results(
    resource_type: str | None, pairs: Sequence[tuple[str, str]], scope: Scope, max_count: int
) -> Search:
    """A Search with only the result parameters set, from ``pairs`` whose names are in NAMES."""
    single, include, revinclude = _collect(pairs, scope)
    if "_summary" in single and "_elements" in single:
        raise invalid("_summary", "cannot be combined with _elements")
    summary, total = single.get("_summary"), single.get("_total")
    return Search(
        resource_type,
        count=None if "_count" not in single else _count(single["_count"], max_count),
        sort=_sort(single.get("_sort", ""), scope.params(resource_type)),
        include=tuple(include),
        revinclude=tuple(revinclude),
        summary=None if summary is None else _choice("_summary", summary, _SUMMARIES),
        elements=_elements(single.get("_elements", "")),
        total=None if total is None else _choice("_total", total, _TOTALS),
        cursor=single.get("_cursor"),
    )


def _collect(pairs: Sequence[tuple[str, str]], scope: Scope) -> tuple[dict[str, str], list[Include], list[Include]]:
    single: dict[str, str] = {}
    includes: dict[str, list[Include]] = {"_include": [], "_revinclude": []}
    for key, value in pairs:
        name, colon, modifier = key.partition(":")
        if name in SKIPPED:
            continue
        if name in UNSUPPORTED:
            raise invalid(name, "is not supported")
        if name in _INCLUDES:
            if colon and modifier not in _ITERATE:
                raise invalid(key, "unknown modifier (only :iterate is allowed)")
            includes[name].append(_include(name, value, bool(colon), scope))
            if len(includes[name]) > MAX_VALUES:
                raise invalid(name, f"may appear at most {MAX_VALUES} times")
            continue
        if colon:
            raise invalid(key, "takes no modifier")
        if name in single:
            raise invalid(name, "may appear only once")
        single[name] = value
    return single, includes["_include"], includes["_revinclude"]


def _include(name: str, value: str, iterate: bool, scope: Scope) -> Include:
    """``SourceType:parameter[:TargetType]`` (search.html#include); no ``*`` wildcards."""
    parts = value.split(":")
    if "*" in parts:
        raise invalid(name, "wildcards (*) are not supported")
    if len(parts) not in (2, 3):
        raise invalid(name, "expected SourceType:parameter[:TargetType]")
    source, code = parts[0], parts[1]
    if source not in scope.resource_types:
        raise invalid(name, "the source is not a resource type this server knows")
    param = scope.params(source).get(code)
    if param is None or param.type != "reference":
        raise invalid(name, f"{source} has no reference parameter '{cap(code)}'")
    target = parts[2] if len(parts) == 3 else None
    if target is not None:
        check_target(name, param, target, scope.resource_types)
    return Include(source, param, target, iterate=iterate)


def _count(value: str, max_count: int) -> int:
    if not (value.isascii() and value.isdigit()):
        raise invalid("_count", "must be a non-negative integer")
    return min(int(value), max_count)


def _sort(value: str, params: Mapping[str, ParamDef]) -> tuple[SortKey, ...]:
    """search.html#sort: ``a,-b``; by parameters of the type (``_id`` and ``_lastUpdated`` included)."""
    keys = [key for key in value.split(",") if key]
    if len(keys) > MAX_VALUES:
        raise invalid("_sort", f"at most {MAX_VALUES} keys")
    return tuple(_sort_key(key, params) for key in keys)


def _sort_key(key: str, params: Mapping[str, ParamDef]) -> SortKey:
    code = key.removeprefix("-")
    param = params.get(code)
    if param is None:
        raise invalid("_sort", f"unknown parameter '{cap(code)}'")
    if param.type in _UNSORTABLE:
        raise invalid("_sort", f"cannot sort by the {param.type} parameter '{code}'")
    return SortKey(param, descending=key.startswith("-"))


def _choice(name: str, value: str, table: Mapping[str, T]) -> T:
    if value not in table:
        raise invalid(name, f"must be one of {', '.join(table)}")
    return table[value]


def _elements(value: str) -> tuple[str, ...]:
    """Element names, not checked against the type (search.html#elements lets the server be lenient)."""
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if len(names) > MAX_VALUES:
        raise invalid("_elements", f"at most {MAX_VALUES} names")
    return names
