"""An in-memory FHIR R4 search evaluator (https://hl7.org/fhir/R4/search.html), the oracle of
tests/store/test_search_properties.py.

It knows the few parameters those tests search by, reads them straight from the resource JSON (not
through the server's FHIRPath, index or parser) and matches each parameter type as search.html
words it:

* string (#string): the normalised value (NFKD, combining marks dropped, case folded) starts with
  the normalised search text; ``:exact`` compares the texts as written.
* token (#token): ``code``, ``system|code``, ``|code`` (no system), ``system|``; ``:not`` is the
  resources the same values do not match, those without the element included.
* date (#date, #prefix): both the stored value and the search value stand for the range their
  precision covers; a value without a zone is UTC.
* number and quantity (#number, #quantity): ``eq`` and ``ne`` by half a unit of the search value's
  last significant digit (``100`` is [99.5, 100.5), ``1e2`` [50, 150)), the other prefixes
  against the exact value ("the precision of the search value is not used for gt or lt"; R4 says
  nothing more for ``sa``/``eb`` on numbers, taken here as ``gt``/``lt``); ``N||u`` matches the
  quantity's code or its human-readable unit, ``N|s|c`` its system and code.
* reference (#reference): ``Type/id``, ``id`` or this server's absolute URL; chains follow the
  reference to a live resource, ``_has`` looks back from one.

A resource matches a parameter when one of its values matches one of the (comma-separated) search
values; repeated parameters AND. Sorting (#sort) uses the lowest value ascending and the highest
descending; resources without a value go last, and ties go by id (the server's documented order).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Protocol

Json = dict[str, Any]
BASE = "https://ehr.test/fhir"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = re.compile(r"(\d{4})(?:-(\d\d)(?:-(\d\d)(?:T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,6}))?)?(Z|[+-]\d\d:\d\d)?)?)?)?")
_NUMBER = re.compile(r"-?\d+(?:\.(\d+))?(?:[eE]([+-]?\d+))?")


class World:
    """The live (created, not deleted) resources of one example."""

    def __init__(self, resources: Iterable[Json]) -> None:
        self.resources = {(r["resourceType"], r["id"]): r for r in resources}

    def of_type(self, res_type: str) -> list[Json]:
        return [r for (t, _), r in sorted(self.resources.items()) if t == res_type]

    def get(self, res_type: str, res_id: str) -> Json | None:
        return self.resources.get((res_type, res_id))


# -- value semantics --------------------------------------------------------------------------


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def date_span(text: str) -> tuple[int, int]:
    """The [low, high) microseconds (UTC) that a date, dateTime or instant's precision covers."""
    match = _DATE.fullmatch(text)
    assert match is not None, text
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if month is None:
        return _us(datetime(int(year), 1, 1, tzinfo=UTC)), _us(datetime(int(year) + 1, 1, 1, tzinfo=UTC))
    if day is None:
        start = datetime(int(year), int(month), 1, tzinfo=UTC)
        return _us(start), _us((start + timedelta(days=31)).replace(day=1))
    if hour is None:
        start = datetime(int(year), int(month), int(day), tzinfo=UTC)
        return _us(start), _us(start + timedelta(days=1))
    local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=offset(zone))
    low = _us(local) + int((fraction or "").ljust(6, "0"))
    width = 60_000_000 if second is None else 1_000_000 if fraction is None else 10 ** (6 - len(fraction))
    return low, low + width


def offset(zone: str | None) -> timezone:
    """The zone of ``Z``, ``+hh:mm`` or ``-hh:mm``; UTC when there is none."""
    if zone is None or zone == "Z":
        return UTC
    east = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return timezone(-east if zone[0] == "-" else east)


def _us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def date_matches(prefix: str, stored: tuple[int, int], search: tuple[int, int]) -> bool:
    """search.html#prefix on ranges: ``stored`` [lo, hi) against the search value's [ql, qh)."""
    (lo, hi), (ql, qh) = stored, search
    within = ql <= lo and hi <= qh
    rules = {
        "eq": within, "ne": not within, "gt": hi > qh, "lt": lo < ql, "ge": hi > qh or within,
        "le": lo < ql or within, "sa": lo >= qh, "eb": hi <= ql,
    }
    return rules[prefix or "eq"]


def number_span(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """The value and [low, high): half a unit of its last significant digit either side."""
    match = _NUMBER.fullmatch(text)
    assert match is not None, text
    places = len(match[1] or "") - int(match[2] or 0)
    half = Decimal(5).scaleb(-(places + 1))
    value = Decimal(text)
    return value, value - half, value + half


def number_matches(prefix: str, stored: Decimal, search: str) -> bool:
    value, low, high = number_span(search)
    within = low <= stored < high
    rules = {
        "eq": within, "ne": not within, "gt": stored > value, "lt": stored < value, "ge": stored >= value,
        "le": stored <= value, "sa": stored > value, "eb": stored < value,
    }
    return rules[prefix or "eq"]


def local_reference(text: str) -> tuple[str | None, str]:
    """(type, id) of ``Type/id``, ``id`` (type None) or this server's ``BASE/Type/id``."""
    parts = text.removeprefix(BASE + "/").split("/")
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


# -- what each parameter reads ----------------------------------------------------------------


def _codings(concept: Json | None) -> list[tuple[str | None, str | None]]:
    return [(c.get("system"), c.get("code")) for c in (concept or {}).get("coding", ())]


_STRINGS: dict[tuple[str, str], Callable[[Json], list[str]]] = {
    ("Patient", "family"): lambda r: [n["family"] for n in r.get("name", ()) if "family" in n],
}
_TOKENS: dict[tuple[str, str], Callable[[Json], list[tuple[str | None, str | None]]]] = {
    ("Patient", "gender"): lambda r: [(None, r["gender"])] if "gender" in r else [],
    ("Patient", "identifier"): lambda r: [(i.get("system"), i.get("value")) for i in r.get("identifier", ())],
    ("Patient", "_tag"): lambda r: _codings({"coding": r.get("meta", {}).get("tag", ())}),
    ("Observation", "code"): lambda r: _codings(r.get("code")),
    ("Observation", "_tag"): lambda r: _codings({"coding": r.get("meta", {}).get("tag", ())}),
}
_DATES: dict[tuple[str, str], Callable[[Json], list[str]]] = {
    ("Patient", "birthdate"): lambda r: [r["birthDate"]] if "birthDate" in r else [],
    ("Observation", "date"): lambda r: [r["effectiveDateTime"]] if "effectiveDateTime" in r else [],
}
_QUANTITIES: dict[tuple[str, str], Callable[[Json], list[Json]]] = {
    ("Observation", "value-quantity"): lambda r: [r["valueQuantity"]] if "value" in r.get("valueQuantity", {}) else [],
}


def _subject(r: Json) -> list[tuple[str | None, str]]:
    reference = r.get("subject", {}).get("reference")
    return [] if reference is None else [local_reference(reference)]


_REFERENCES: dict[tuple[str, str], Callable[[Json], list[tuple[str | None, str]]]] = {
    ("Observation", "subject"): _subject,
    ("Observation", "patient"): lambda r: [(t, i) for t, i in _subject(r) if t == "Patient"],
}


def sort_value(resource: Json, code: str, descending: bool) -> Decimal | int | None:
    """The value a resource sorts by: its lowest ascending, its highest descending."""
    key = (resource["resourceType"], code)
    if key in _DATES:
        spans = [date_span(text) for text in _DATES[key](resource)]
        return None if not spans else max(hi for _, hi in spans) if descending else min(lo for lo, _ in spans)
    values = [Decimal(str(q["value"])) for q in _QUANTITIES[key](resource)]
    return None if not values else max(values) if descending else min(values)


# -- parameters ---------------------------------------------------------------------------------


class Param(Protocol):
    def pair(self) -> tuple[str, str]: ...

    def matches(self, resource: Json, world: World) -> bool: ...


@dataclass(frozen=True, slots=True)
class StringParam:
    code: str
    texts: tuple[str, ...]
    exact: bool = False

    def pair(self) -> tuple[str, str]:
        return self.code + (":exact" if self.exact else ""), ",".join(self.texts)

    def matches(self, resource: Json, world: World) -> bool:
        stored = _STRINGS[resource["resourceType"], self.code](resource)
        if self.exact:
            return any(s == t for s in stored for t in self.texts)
        return any(normalise(s).startswith(normalise(t)) for s in stored for t in self.texts)


@dataclass(frozen=True, slots=True)
class Token:
    system: str | None  # None: any system (``code``); "": none (``|code``)
    code: str | None    # None: any code (``system|``)

    def text(self) -> str:
        return str(self.code) if self.system is None else f"{self.system}|{self.code or ''}"

    def matches(self, system: str | None, code: str | None) -> bool:
        if self.code is not None and code != self.code:
            return False
        return self.system is None or (system or "") == self.system


@dataclass(frozen=True, slots=True)
class TokenParam:
    code: str
    tokens: tuple[Token, ...]
    negate: bool = False

    def pair(self) -> tuple[str, str]:
        return self.code + (":not" if self.negate else ""), ",".join(t.text() for t in self.tokens)

    def matches(self, resource: Json, world: World) -> bool:
        stored = _TOKENS[resource["resourceType"], self.code](resource)
        return any(t.matches(s, c) for s, c in stored for t in self.tokens) != self.negate


@dataclass(frozen=True, slots=True)
class DateParam:
    code: str
    values: tuple[tuple[str, str], ...]  # (prefix, date text); prefix "" is an implicit eq

    def pair(self) -> tuple[str, str]:
        return self.code, ",".join(prefix + text for prefix, text in self.values)

    def matches(self, resource: Json, world: World) -> bool:
        stored = [date_span(text) for text in _DATES[resource["resourceType"], self.code](resource)]
        return any(date_matches(p, s, date_span(t)) for s in stored for p, t in self.values)


@dataclass(frozen=True, slots=True)
class Quantity:
    prefix: str
    number: str
    system: str | None = None  # with unit: N|system|code; without: N||unit
    unit: str | None = None    # None: any unit

    def text(self) -> str:
        suffix = "" if self.unit is None else f"|{self.system or ''}|{self.unit}"
        return self.prefix + self.number + suffix

    def matches(self, quantity: Json) -> bool:
        if not number_matches(self.prefix, Decimal(str(quantity["value"])), self.number):
            return False
        if self.unit is None:
            return True
        if self.system is None:
            return self.unit in (quantity.get("code"), quantity.get("unit"))
        return quantity.get("system") == self.system and quantity.get("code") == self.unit


@dataclass(frozen=True, slots=True)
class QuantityParam:
    code: str
    values: tuple[Quantity, ...]

    def pair(self) -> tuple[str, str]:
        return self.code, ",".join(q.text() for q in self.values)

    def matches(self, resource: Json, world: World) -> bool:
        stored = _QUANTITIES[resource["resourceType"], self.code](resource)
        return any(q.matches(s) for s in stored for q in self.values)


@dataclass(frozen=True, slots=True)
class ReferenceParam:
    code: str
    values: tuple[str, ...]  # Type/id, id or BASE/Type/id
    target_type: str | None = None  # the :Type modifier

    def pair(self) -> tuple[str, str]:
        return self.code + (f":{self.target_type}" if self.target_type else ""), ",".join(self.values)

    def matches(self, resource: Json, world: World) -> bool:
        stored = _REFERENCES[resource["resourceType"], self.code](resource)
        wanted = [local_reference(v) for v in self.values]
        return any(
            i == qi and (qt or self.target_type) in (None, t) for t, i in stored for qt, qi in wanted
        )


@dataclass(frozen=True, slots=True)
class ChainParam:
    """``code[:Type].inner``: the reference leads to a live resource that ``inner`` matches."""

    code: str
    target_type: str
    inner: Param
    typed: bool = False  # write the type as a modifier (subject:Patient.family)

    def pair(self) -> tuple[str, str]:
        key, value = self.inner.pair()
        return f"{self.code}{':' + self.target_type if self.typed else ''}.{key}", value

    def matches(self, resource: Json, world: World) -> bool:
        for res_type, res_id in _REFERENCES[resource["resourceType"], self.code](resource):
            target = world.get(self.target_type, res_id) if res_type == self.target_type else None
            if target is not None and self.inner.matches(target, world):
                return True
        return False


@dataclass(frozen=True, slots=True)
class HasParam:
    """``_has:Source:reference:inner``: a live Source that points here by ``reference`` matches ``inner``."""

    source: str
    reference: str
    inner: Param

    def pair(self) -> tuple[str, str]:
        key, value = self.inner.pair()
        return f"_has:{self.source}:{self.reference}:{key}", value

    def matches(self, resource: Json, world: World) -> bool:
        me = (resource["resourceType"], resource["id"])
        return any(
            me in _REFERENCES[self.source, self.reference](other) and self.inner.matches(other, world)
            for other in world.of_type(self.source)
        )


@dataclass(frozen=True, slots=True)
class Query:
    res_type: str
    params: tuple[Param, ...]
    sort: str | None = None  # a parameter code, "-" in front for descending
    count: int | None = None

    def pairs(self) -> list[tuple[str, str]]:
        extra = [("_sort", self.sort)] if self.sort else []
        return [p.pair() for p in self.params] + extra + ([("_count", str(self.count))] if self.count else [])

    def expected(self, world: World) -> list[str]:
        """The ids of the matches, in the order the query asks for (by id when it asks for none)."""
        found = [r for r in world.of_type(self.res_type) if all(p.matches(r, world) for p in self.params)]
        if self.sort is None:
            return [r["id"] for r in found]
        descending, code = self.sort.startswith("-"), self.sort.removeprefix("-")

        def key(resource: Json) -> tuple[bool, Decimal | int, str]:
            value = sort_value(resource, code, descending)
            return value is None, 0 if value is None else -value if descending else value, resource["id"]

        return [r["id"] for r in sorted(found, key=key)]
