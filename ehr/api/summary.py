"""``_summary`` and ``_elements`` (search.html#summary, #elements): the parts of a matched resource
the client asked for, marked SUBSETTED (http://hl7.org/fhir/R4/v3/ObservationValue) as R4 requires.

Only top-level elements are chosen, as R4 says for ``_elements``; ``_summary=true`` keeps the
elements the StructureDefinition marks isSummary. Mandatory elements, ``id`` and ``meta`` always stay.
"""

from __future__ import annotations

from typing import Any

from ehr.crypto.canonical import canonical_json, parse_json
from ehr.fhir.definitions import ComplexType, definitions
from ehr.fhir.search.model import Search

_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


def apply(body: bytes, search: Search) -> bytes:
    """The body as the search asked for it; unchanged bytes when it asked for all of it."""
    if search.summary in (None, "false") and not search.elements:
        return body
    resource: dict[str, Any] = parse_json(body)
    kind = definitions().resources.get(resource.get("resourceType", ""))
    if kind is None:
        return body
    keep = _kept(kind, search)
    subset = {k: v for k, v in resource.items() if keep(k)}
    meta = dict(subset.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    subset["meta"] = meta
    return canonical_json(subset)


def _kept(kind: ComplexType, search: Search) -> Any:
    mandatory = set(kind.required) | set(kind.required_choices) | _ALWAYS
    if search.summary == "data":
        return lambda name: name != "text"
    if search.summary == "text":
        return lambda name: bool(_names(kind, name) & mandatory) or name == "text"
    if search.summary == "true":
        return lambda name: bool(_names(kind, name) & mandatory) or _summary_element(kind, name)
    wanted = set(search.elements) | mandatory
    return lambda name: bool(_names(kind, name) & wanted)


def _names(kind: ComplexType, name: str) -> set[str]:
    """The names an element answers to: its JSON name and, for a choice (valueQuantity), the group."""
    bare = name.lstrip("_")
    element = kind.elements.get(bare)
    return {bare, element.choice} if element is not None and element.choice else {bare}


def _summary_element(kind: ComplexType, name: str) -> bool:
    element = kind.elements.get(name.lstrip("_"))
    return element is not None and element.summary
