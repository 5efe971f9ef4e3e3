"""Turn an element into the values a parameter of each search type indexes (R4 search.html).

One table per parameter type maps the FHIR type of the element to a converter; a type that is
not in the table yields nothing. ``Extension`` nodes (``extension('url')`` expressions) are
converted through their ``value[x]``. Choices made where the spec leaves room:

* string (#string): HumanName -> family, given, prefix, suffix, text; Address -> line, city,
  district, state, postalCode, country, text; each a value of its own.
* token (#token): a Coding is (system, code, display); each coding of a CodeableConcept carries
  the concept's text (else its display) for ``:text``, and a concept with text only is
  (None, None, text); Identifier is (system, value, type.text); ContactPoint is (None, value);
  code and other primitives are (None, value), even where the binding implies a system;
  boolean is (None, "true"/"false").
* date (#date): the range of the value's precision (:mod:`dates`); Period from start's low to
  end's high, open ends at MIN_US/MAX_US; Timing the outer limits of its events and
  ``repeat.boundsPeriod``; a string only when it reads as a date.
* quantity (#quantity): Quantity and its specialisations; Money as (value, urn:iso:std:iso:4217,
  currency). Range and SampledData have no single quantity and are not indexed (the generator
  lists such parameters under ``unindexed``).
* reference (#reference): ``Reference.reference`` unless it is ``#contained`` (a Reference with
  only an identifier has no target to find); canonical and uri values as written.
* number and quantity values keep the JSON's decimal form (parsed with ``parse_float=Decimal``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from ehr.fhir.search import fhirtypes
from ehr.fhir.search.dates import date_range
from ehr.fhir.search.values import (
    MAX_US,
    MIN_US,
    DateValue,
    NumberValue,
    ParamType,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)

__all__ = ["Convert", "converters"]

Convert = Callable[[Any], list[Value]]
Json = dict[str, Any]
ISO_4217 = "urn:iso:std:iso:4217"
_STRINGY = ("string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid")
_URIS = ("uri", "url", "canonical", "oid", "uuid")
_NUMBERS = ("decimal", "integer", "positiveInt", "unsignedInt")
_NAME_PARTS = ("given", "prefix", "suffix")
_ADDRESS_PARTS = ("city", "district", "state", "postalCode", "country", "text")


def _strings(texts: list[Any]) -> list[Value]:
    return [StringValue(t) for t in texts if isinstance(t, str) and t]


def _human_name(name: Json) -> list[Value]:
    parts = [name.get("family"), name.get("text")]
    for key in _NAME_PARTS:
        parts.extend(name.get(key, ()))
    return _strings(parts)


def _address(address: Json) -> list[Value]:
    return _strings([*address.get("line", ()), *(address.get(key) for key in _ADDRESS_PARTS)])


def _coding(coding: Json, text: str | None = None) -> list[Value]:
    system, code = coding.get("system"), coding.get("code")
    if system is None and code is None:
        return []
    return [TokenValue(system, code, text or coding.get("display"))]


def _concept(concept: Json) -> list[Value]:
    """Each coding, with ``CodeableConcept.text`` (else the coding's display) for ``:text``."""
    text = concept.get("text")
    values = [v for coding in concept.get("coding", ()) for v in _coding(coding, text)]
    return values or ([TokenValue(None, None, text)] if text else [])


def _identifier(identifier: Json) -> list[Value]:
    system, value = identifier.get("system"), identifier.get("value")
    if system is None and value is None:
        return []
    return [TokenValue(system, value, identifier.get("type", {}).get("text"))]


def _contact(point: Json) -> list[Value]:
    value = point.get("value")
    return [TokenValue(None, value)] if value else []


def _date(text: str) -> list[Value]:
    found = date_range(text)
    return [DateValue(*found)] if found else []


def _period(period: Json) -> list[Value]:
    start = date_range(period["start"]) if "start" in period else None
    end = date_range(period["end"]) if "end" in period else None
    low, high = start[0] if start else MIN_US, end[1] if end else MAX_US
    return [DateValue(low, high)] if low < high else []


def _timing(timing: Json) -> list[Value]:
    """The outer limits of the events and of ``repeat.boundsPeriod`` (search.html#date)."""
    ranges = [r for r in map(date_range, timing.get("event", ())) if r]
    bounds = timing.get("repeat", {}).get("boundsPeriod")
    ranges.extend((v.low_us, v.high_us) for v in (_period(bounds) if bounds else ()) if isinstance(v, DateValue))
    if not ranges:
        return []
    return [DateValue(min(r[0] for r in ranges), max(r[1] for r in ranges))]


def _reference(reference: Json) -> list[Value]:
    text = reference.get("reference")
    return [ReferenceValue(text)] if text and not text.startswith("#") else []


def decimal(value: Any) -> Decimal:
    """The exact JSON number: the server parses JSON with ``parse_float=Decimal``; a float (from
    another parser) goes through its shortest repr, never its binary expansion."""
    return value if type(value) is Decimal else Decimal(value if type(value) is int else str(value))


def _number(value: Any) -> list[Value]:
    return [] if isinstance(value, bool) else [NumberValue(decimal(value))]


def _quantity(quantity: Json) -> list[Value]:
    value = quantity.get("value")
    if value is None:
        return []
    return [QuantityValue(decimal(value), quantity.get("system"), quantity.get("code"), quantity.get("unit"))]


def _money(money: Json) -> list[Value]:
    value = money.get("value")
    return [] if value is None else [QuantityValue(decimal(value), ISO_4217, money.get("currency"), None)]


_TABLES: dict[str, dict[str, Convert]] = {
    "string": {
        **{t: lambda v: _strings([v]) for t in _STRINGY}, "HumanName": _human_name, "Address": _address,
    },
    "token": {
        **{t: lambda v: [TokenValue(None, v)] for t in _STRINGY},
        "boolean": lambda v: [TokenValue(None, "true" if v else "false")],
        "Coding": _coding, "CodeableConcept": _concept, "Identifier": _identifier, "ContactPoint": _contact,
    },
    "date": {**{t: _date for t in ("date", "dateTime", "instant", "string")}, "Period": _period, "Timing": _timing},
    "reference": {"Reference": _reference, **{t: lambda v: [ReferenceValue(v)] for t in _URIS}},
    "number": {t: _number for t in _NUMBERS},
    "quantity": {**{t: _quantity for t in fhirtypes.QUANTITIES}, "Money": _money},
    "uri": {t: lambda v: [UriValue(v)] for t in _URIS},
}


def converters(param_type: ParamType) -> Mapping[str, Convert]:
    """FHIR type -> converter for one parameter type (empty for composite and special)."""
    table = _TABLES.get(param_type)
    if table is None:
        return {}
    return {**table, "Extension": _unwrapping(table)}


def _unwrapping(table: dict[str, Convert]) -> Convert:
    keys = _extension_values()

    def convert(extension: Json) -> list[Value]:
        for key, value in extension.items():
            inner = table.get(keys.get(key, ""))
            if inner is not None:
                return inner(value)
        return []

    return convert


@functools.cache
def _extension_values() -> dict[str, str]:
    elements = fhirtypes.complex_types()["Extension"].elements
    return {key: e.type_name for key, e in elements.items() if e.choice == "value"}
