"""Checkers for the FHIR R4 primitive types in their JSON form.

Spec: http://hl7.org/fhir/R4/datatypes.html#primitive and
http://hl7.org/fhir/R4/json.html#primitive.

Each checker returns ``None`` when the value is acceptable, else ``(issue code, what is
expected)``; the message never repeats the value, which may be patient data.

The regexes come from the official StructureDefinitions. They are written for XML Schema /
Java, where ``\\s`` and ``\\S`` are ASCII classes, so they are compiled with ``re.ASCII``
(a no-break space in a name is a valid FHIR string). JSON numbers arrive as ``int`` or
``decimal.Decimal``; ``float`` is accepted for ``decimal`` when finite.

``xhtml`` is checked only for its outer shape, a ``<div`` in the XHTML namespace
(http://hl7.org/fhir/R4/narrative.html#xhtml); full XHTML checking (the allowed elements
and attributes, well-formedness) is out of scope.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import TypedDict

Problem = tuple[str, str]
Checker = Callable[[object], Problem | None]

XHTML_NAMESPACE = "http://www.w3.org/1999/xhtml"

# The official base64Binary regex, (\s*([0-9a-zA-Z\+/=]){4}\s*)+, can split each run of
# whitespace between two groups' \s* in two ways, so a long input that fails at its end takes
# exponential time (ReDoS). This one accepts the same strings with no ambiguity.
LINEAR_EQUIVALENTS = {
    "base64Binary": r"\s*(?:[0-9a-zA-Z+/=]{4})+(?:\s+(?:[0-9a-zA-Z+/=]{4})+)*\s*",
}


class PrimitiveTable(TypedDict, total=False):
    json: str
    regex: str | None
    range: list[int]
    maxLength: int


def checker(name: str, table: PrimitiveTable) -> Checker:
    """The checker for primitive ``name`` described by its compiled ``table`` entry."""
    kind = table["json"]
    if kind == "boolean":
        return _check_boolean
    if kind == "integer":
        low, high = table["range"]
        return _integer_checker(name, low, high)
    if kind == "decimal":
        return _check_decimal
    if name == "xhtml":
        return _check_xhtml
    regex = LINEAR_EQUIVALENTS.get(name, table.get("regex"))
    pattern = re.compile(regex, re.ASCII) if regex else None
    return _string_checker(name, pattern, table.get("maxLength"))


def _check_boolean(value: object) -> Problem | None:
    if value is True or value is False:
        return None
    return "structure", "expected a JSON boolean (true or false)"


def _integer_checker(name: str, low: int, high: int) -> Checker:
    def check(value: object) -> Problem | None:
        if type(value) is not int:
            return "structure", f"expected a JSON integer ({name})"
        if value < low or value > high:
            return "value", f"{name} must be between {low} and {high}"
        return None

    return check


def _check_decimal(value: object) -> Problem | None:
    if type(value) is int:
        return None
    if isinstance(value, Decimal) and value.is_finite():
        return None
    if isinstance(value, float) and math.isfinite(value):
        return None
    return "structure", "expected a finite JSON number (decimal)"


def _string_checker(name: str, pattern: re.Pattern[str] | None, max_length: int | None) -> Checker:
    expected = f"expected a JSON string ({name})"
    malformed = f"not a valid {name}" + (f" (must match {pattern.pattern})" if pattern else "")
    limit = max_length or 0

    def check(value: object) -> Problem | None:
        if type(value) is not str:
            return "structure", expected
        if not value:
            return "value", "empty strings are not allowed (ele-1); omit the element"
        if limit and len(value) * 4 > limit and len(value.encode("utf-8", "surrogatepass")) > limit:
            return "too-long", f"{name} exceeds {limit} bytes"
        if pattern is not None and pattern.fullmatch(value) is None:
            return "value", malformed
        return None

    return check


def _check_xhtml(value: object) -> Problem | None:
    if type(value) is not str:
        return "structure", "expected a JSON string (xhtml)"
    if not value.startswith("<div") or XHTML_NAMESPACE not in value:
        return "value", f'narrative must be a <div> element with xmlns="{XHTML_NAMESPACE}"'
    return None
