"""OBX as an Observation (IG: Segment OBX to Observation), its value chosen by OBX-2 (table 0125).

A value that does not fit its type is an error at OBX-5; a type with no mapping is an error at
OBX-2, unless it is text-like (kept as valueString). When OBX-5 repeats, each repetition becomes an
Observation.component with the OBX-3 code (IG: OBX[Observation-Component]); TX and FT repetitions,
which are lines of one text, are joined with line breaks instead.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from interfaces.hl7v2.mapping import tables
from interfaces.hl7v2.mapping.context import JSON, Context
from interfaces.hl7v2.mapping.datatypes import codeable, date_time, decimal, quantity, time_of_day
from interfaces.hl7v2.mapping.segments import Rep, Segment

Value = tuple[str, Any]
_ATTACHMENT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value"
_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*(?:-|to)\s*(-?\d+(?:\.\d+)?)\s*")
_LIMIT = re.compile(r"\s*([<>])=?\s*(-?\d+(?:\.\d+)?)\s*")
_TEXT_TYPES = ("ST", "TX", "FT")


class BadValue(ValueError):
    """OBX-5 does not hold a value of the type OBX-2 names."""


def _nm(rep: Rep, obx: Segment, ctx: Context) -> Value:
    try:
        return "valueQuantity", quantity(decimal(rep.get(1)), obx.rep(6))
    except ValueError:
        raise BadValue from None


def _sn(rep: Rep, obx: Segment, ctx: Context) -> Value:
    """SN: comparator^num1^separator^num2 (IG: Quantity, Range for '-', Ratio for ':' and '/')."""
    comparator, separator = rep.get(1), rep.get(3)
    try:
        first = decimal(rep.get(2))
        if separator in (":", "/"):
            return "valueRatio", {"numerator": {"value": first}, "denominator": {"value": decimal(rep.get(4))}}
        if separator == "-":
            return "valueRange", {"low": quantity(first, obx.rep(6)), "high": quantity(decimal(rep.get(4)), obx.rep(6))}
    except ValueError:
        raise BadValue from None
    if separator or comparator == "<>":
        words = [rep.get(c) for c in (1, 2, 3, 4)] + [obx.get(6)]
        return "valueString", " ".join(w for w in words if w)
    found = quantity(first, obx.rep(6))
    if comparator in ("<", "<=", ">", ">="):
        found["comparator"] = comparator
    return "valueQuantity", found


def _text(rep: Rep, obx: Segment, ctx: Context) -> Value:
    return "valueString", rep.text()


def _words(rep: Rep, obx: Segment, ctx: Context) -> Value:
    """A text-like type with components (FN, TN, ...): its non-empty components, space separated."""
    parts = rep.raw.split(rep.d.component)
    return "valueString", " ".join(w for w in (rep.get(n) for n in range(1, len(parts) + 1)) if w)


def _coded(rep: Rep, obx: Segment, ctx: Context) -> Value:
    return "valueCodeableConcept", codeable(rep)


def _date_time(rep: Rep, obx: Segment, ctx: Context) -> Value:
    try:
        return "valueDateTime", date_time(rep.get(1), ctx.zone)
    except ValueError:
        raise BadValue from None


def _time(rep: Rep, obx: Segment, ctx: Context) -> Value:
    try:
        return "valueTime", time_of_day(rep.get(1))
    except ValueError:
        raise BadValue from None


def _period(rep: Rep, obx: Segment, ctx: Context) -> Value:
    try:
        ends = {k: date_time(rep.get(n), ctx.zone) for k, n in (("start", 1), ("end", 2)) if rep.get(n)}
    except ValueError:
        raise BadValue from None
    return "valuePeriod", ends


def _numeric_range(rep: Rep, obx: Segment, ctx: Context) -> Value:
    try:
        ends = {k: {"value": decimal(rep.get(n))} for k, n in (("low", 1), ("high", 2)) if rep.get(n)}
    except ValueError:
        raise BadValue from None
    return "valueRange", ends


def _pointer(rep: Rep, obx: Segment, ctx: Context) -> Value:
    """RP: the pointer as an R5 Observation.value attachment (IG), its URL without whitespace."""
    url = rep.get(1)
    if not url or any(c.isspace() for c in url):
        raise BadValue
    return "extension", [{"url": _ATTACHMENT, "valueAttachment": {"url": url}}]


def _encapsulated(rep: Rep, obx: Segment, ctx: Context) -> Value:
    """ED with Base64 data (ED-4, ED-5), as the IG maps it: an attachment."""
    data = rep.get(5)
    try:
        if rep.get(4).upper() != "BASE64" or not data:
            raise BadValue
        base64.b64decode(data, validate=True)
    except binascii.Error:
        raise BadValue from None
    return "extension", [{"url": _ATTACHMENT, "valueAttachment": {"data": data}}]


Builder = Callable[[Rep, Segment, Context], Value]
VALUE_BUILDERS: dict[str, Builder] = {
    "NM": _nm, "SN": _sn, "ST": _text, "TX": _text, "FT": _text,
    "CE": _coded, "CWE": _coded, "CNE": _coded, "CF": _coded, "IS": _coded,
    "DT": _date_time, "DTM": _date_time, "TS": _date_time, "TM": _time, "DR": _period, "NR": _numeric_range,
    "RP": _pointer, "ED": _encapsulated,
    "ID": _words, "TN": _words, "FN": _words, "PN": _words, "XPN": _words, "AD": _words, "XAD": _words,
}


def values(obx: Segment, ctx: Context) -> list[Value]:
    """OBX-5 as value[x] pairs, one per repetition (TX, FT and ST repetitions joined as lines)."""
    kind, reps = obx.get(2), obx.reps(5)
    if kind in _TEXT_TYPES and reps:
        return [("valueString", "\n".join(r.text() for r in reps))]
    return [VALUE_BUILDERS[kind](r, obx, ctx) for r in reps]


def reference_range(obx: Segment) -> list[JSON]:
    """OBX-7 as referenceRange.text, with low/high (in the OBX-6 unit) when it reads as a range or limit."""
    text = obx.get(7)
    if not text:
        return []
    found: JSON = {"text": text}
    if match := _RANGE.fullmatch(text):
        found["low"], found["high"] = (_simple(decimal(m), obx) for m in match.groups())
    elif match := _LIMIT.fullmatch(text):
        found["high" if match[1] == "<" else "low"] = _simple(decimal(match[2]), obx)
    return [found]


def _simple(value: Any, obx: Segment) -> JSON:
    return quantity(value, obx.rep(6))


def interpretation(obx: Segment) -> list[JSON]:
    """OBX-8 (every repetition): table 0078 codes as v3 ObservationInterpretation, others as sent."""
    found = []
    for rep in obx.reps(8):
        code = rep.get(1)
        if code in tables.INTERPRETATION:
            found.append({"coding": [{"system": tables.V3_INTERPRETATION, "code": code}]})
        elif concept := codeable(rep):
            found.append(concept)
    return found
