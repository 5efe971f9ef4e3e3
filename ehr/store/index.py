"""The search index rows of one resource (ehr/store/persist.py writes them with the version).

Extraction (ehr/fhir/search/extract.py) says which values a resource is searchable by; this module
turns them into rows: strings, tokens and uris as blind keys (ehr/crypto/blind.py), references as
local (type, id) or a foreign URL, dates as ranges, numbers and quantities as values, and the
patient compartments. Composites index two-part ones whose first part is a token (all of R4's but
four token/number/number ones, which are left out of the CapabilityStatement).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ehr.crypto.blind import URI, BlindIndex
from ehr.fhir.search.definitions import params
from ehr.fhir.search.extract import extract, patient_compartment
from ehr.fhir.search.values import (
    CompositeValue,
    DateValue,
    NumberValue,
    ParamDef,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

TABLES = ("search_key", "search_ref", "search_date", "search_number", "search_composite", "search_compartment")
COLUMNS = {
    "search_key": ("param", "k"),
    "search_ref": ("param", "target_type", "target_id", "url"),
    "search_date": ("param", "lo", "hi"),
    "search_number": ("param", "value", "system", "code"),
    "search_composite": ("param", "k1", "k2", "lo", "hi", "value", "system", "code"),
    "search_compartment": ("patient",),
}
_LOCAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_INDEXED = frozenset({"string", "token", "date", "reference", "number", "quantity", "uri"})
_SECOND_PARTS = frozenset({"token", "string", "quantity", "date"})
_RESOURCE_LEVEL = "http://hl7.org/fhir/SearchParameter/Resource-"
_LEFT_OUT = frozenset({"phonetic"})
TEXT_SUFFIX = ":text"  # tokens' display text is indexed as a string under "<param>:text"


def composite_part(param: str, n: int) -> str:
    """The name a composite's n-th part is keyed under (its keys differ from the plain parameter's)."""
    return f"{param}${n}"


@dataclass(slots=True)
class IndexRows:
    """Per table, whole rows: (res_type, res_id, *COLUMNS[table])."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {t: [] for t in TABLES})
    patients: frozenset[str] = frozenset()

    @property
    def compartment(self) -> str | None:
        """The one patient the version is filed under (audit, distribution): the first of its patients."""
        return min(self.patients) if self.patients else None


@functools.cache
def supported_params(res_type: str) -> Mapping[str, ParamDef]:
    """The parameters this server searches by on ``res_type``: what the index holds. ``"Resource"``
    gives those of every type, for system-level search. Left out: the four token/number/number
    composites, and ``phonetic`` (R4 means a sound-alike match, which prefixes of a name are not)."""
    if res_type == "Resource":
        return {c: p for c, p in supported_params("Patient").items() if p.url.startswith(_RESOURCE_LEVEL)}
    return {
        code: p for code, p in params(res_type).items()
        if (p.type in _INDEXED or _indexed_composite(p)) and code not in _LEFT_OUT
    }


def _indexed_composite(param: ParamDef) -> bool:
    """Two-part composites led by a token (ehr/store/index.py indexes those)."""
    kinds = tuple(c.type for c in param.components)
    return param.type == "composite" and len(kinds) == 2 and kinds[0] == "token" and kinds[1] in _SECOND_PARTS


class Indexer:
    def __init__(self, blind: BlindIndex, base: str) -> None:
        self.blind = blind
        self.base = base.rstrip("/")
        self._base = self.base + "/"

    def rows(self, res_type: str, res_id: str, resource: dict[str, Any]) -> IndexRows:
        out = IndexRows()
        keys: set[tuple[str, bytes]] = set()
        indexed = supported_params(res_type)
        for param, value in extract(resource):
            if param in indexed:
                self._add(out, keys, res_type, param, value)
        patients = set(patient_compartment(resource))
        if res_type == "Patient":
            patients.add(res_id)
        out.patients = frozenset(patients)
        out.rows["search_compartment"] = [(p,) for p in sorted(patients)]
        for table, rows in out.rows.items():  # whole rows, as the tables take them
            out.rows[table] = [(res_type, res_id, *row) for row in rows]
        out.rows["search_key"] = [(res_type, res_id, param, k) for param, k in keys]
        return out

    def _add(self, out: IndexRows, keys: set[tuple[str, bytes]], res_type: str, param: str, value: object) -> None:
        blind = self.blind
        match value:
            case StringValue(text):
                keys.update((param, k) for k in blind.string_keys(res_type, param, text))
            case TokenValue(system, code, text):
                keys.update((param, k) for k in blind.token_keys(res_type, param, system, code))
                if text:
                    label = param + TEXT_SUFFIX
                    keys.update((label, k) for k in blind.string_keys(res_type, label, text))
            case UriValue(uri):
                keys.add((param, blind.key(URI, res_type, param, uri)))
            case ReferenceValue(reference):
                target = self.local_target(reference)
                if target is not None:
                    out.rows["search_ref"].append((param, *target, None))
                elif not reference.startswith(("urn:", "#")):
                    out.rows["search_ref"].append((param, None, None, reference[:2048]))
            case DateValue(lo, hi):
                out.rows["search_date"].append((param, lo, hi))
            case NumberValue(number):
                out.rows["search_number"].append((param, float(number), None, None))
            case QuantityValue(number, system, code, unit):
                out.rows["search_number"].append((param, float(number), system, code or unit))
                if unit and code and unit != code:  # N||unit matches the code or the human unit (R4)
                    out.rows["search_number"].append((param, float(number), None, unit))
            case CompositeValue(parts):
                out.rows["search_composite"] += self._composite(res_type, param, parts)
            case _:
                pass

    def _composite(self, res_type: str, param: str, parts: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Rows of a two-part composite whose first part is a token: one per key form of the token
        (and of a token or string second part), the second part's value alongside."""
        if len(parts) != 2 or not isinstance(parts[0], TokenValue):
            return []
        first, second = parts[0], parts[1]
        blind, p1, p2 = self.blind, composite_part(param, 0), composite_part(param, 1)
        k1s = sorted(blind.token_keys(res_type, p1, first.system, first.code))
        match second:
            case TokenValue(system, code, _):
                return [(param, k1, k2, None, None, None, None, None)
                        for k1 in k1s for k2 in sorted(blind.token_keys(res_type, p2, system, code))]
            case StringValue(text):
                return [(param, k1, k2, None, None, None, None, None)
                        for k1 in k1s for k2 in sorted(blind.string_keys(res_type, p2, text))]
            case QuantityValue(number, system, code, unit):
                return [(param, k1, None, None, None, float(number), system, code or unit) for k1 in k1s]
            case DateValue(lo, hi):
                return [(param, k1, None, lo, hi, None, None, None) for k1 in k1s]
        return []

    def local_target(self, reference: str) -> tuple[str, str] | None:
        """(type, id) of a reference to a resource on this server, relative or by its absolute URL."""
        if reference.startswith(self._base):
            reference = reference[len(self._base):]
        match = _LOCAL.match(reference)
        return (match[1], match[2]) if match else None

