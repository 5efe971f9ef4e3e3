"""What a resource is indexed under, one value per (parameter, element), and a parameter's definition.

These are plain data: extraction (extract.py) makes them from a resource, the store turns them into
index rows (blind-hashed where the value identifies a person), and a parsed query (query.py) is
matched against the rows. Dates are half-open ranges in microseconds since the epoch (UTC): the
precision of a value is its range (``2020-03`` is March 2020), open period ends are the extremes.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

MIN_US = -(2**62)
MAX_US = 2**62

ParamType = Literal["string", "token", "date", "reference", "number", "quantity", "uri", "composite", "special"]


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str  # as written in the resource; normalising is the index's job


@dataclass(frozen=True, slots=True)
class TokenValue:
    system: str | None
    code: str | None
    text: str | None = None  # CodeableConcept.text / Coding.display / Identifier.type.text, for :text


@dataclass(frozen=True, slots=True)
class DateValue:
    low_us: int   # inclusive
    high_us: int  # exclusive


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    reference: str  # as written: "Patient/1", "http://x/fhir/Patient/1", "urn:uuid:...", a canonical URL


@dataclass(frozen=True, slots=True)
class NumberValue:
    value: Decimal


@dataclass(frozen=True, slots=True)
class QuantityValue:
    value: Decimal
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class UriValue:
    uri: str


Value = StringValue | TokenValue | DateValue | ReferenceValue | NumberValue | QuantityValue | UriValue


@dataclass(frozen=True, slots=True)
class CompositeValue:
    parts: tuple[Value, ...]  # one per component, in the definition's order, from the same element


@dataclass(frozen=True, slots=True)
class Component:
    code: str   # the code of the component's own SearchParameter (e.g. "code", "value-quantity")
    type: ParamType
    expression: str  # FHIRPath relative to the composite's element


@dataclass(frozen=True, slots=True)
class ParamDef:
    """One search parameter as it applies to one resource type."""

    code: str                       # e.g. "family", "_tag", "code-value-quantity"
    type: ParamType
    url: str                        # the SearchParameter's canonical URL
    expression: str                 # the part of the official expression for this resource type
    targets: tuple[str, ...] = ()   # reference target types
    components: tuple[Component, ...] = ()
    description: str = ""
