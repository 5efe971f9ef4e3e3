"""A parsed FHIR search (https://hl7.org/fhir/R4/search.html), ready for the store to turn into SQL.

``Search.criteria`` are ANDed; each criterion's ``values`` are ORed. Values are typed by the
parameter's type: the parser has already split tokens, turned date and number prefixes into ranges
and resolved this server's absolute URLs, so the SQL layer never parses a string again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from ehr.fhir.search.values import ParamDef

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
Summary = Literal["true", "false", "count", "data", "text"]
Total = Literal["none", "estimate", "accurate"]


@dataclass(frozen=True, slots=True)
class TokenQuery:
    """``code`` (any system), ``system|code``, ``|code`` (no system: system == ""), ``system|`` (code None)."""

    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class DateQuery:
    prefix: Prefix
    low_us: int   # the search value's own range, from its precision: [low, high)
    high_us: int


@dataclass(frozen=True, slots=True)
class NumberQuery:
    prefix: Prefix
    value: Decimal
    low: Decimal   # the implicit range of the value's precision (100 -> [99.5, 100.5)) for eq/ne/ap
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityQuery:
    number: NumberQuery
    system: str | None  # None: any system
    code: str | None    # None: any unit


@dataclass(frozen=True, slots=True)
class ReferenceQuery:
    """``Type/id`` or ``id`` (type None: any target the parameter allows), or a non-local absolute URL."""

    type: str | None
    id: str | None
    url: str | None = None


QueryValue = str | TokenQuery | DateQuery | NumberQuery | QuantityQuery | ReferenceQuery | tuple["QueryValue", ...]


@dataclass(frozen=True, slots=True)
class Criterion:
    param: ParamDef
    modifier: str | None = None          # exact contains missing not text above below identifier, or a type
    values: tuple[QueryValue, ...] = ()  # ORed; composite values are tuples, one part per component
    missing: bool | None = None          # for :missing=true|false
    chain: Criterion | None = None       # subject:Patient.name=x -> values empty, chain = name criterion
    chain_type: str | None = None        # the target type the chain goes through (Patient)


@dataclass(frozen=True, slots=True)
class HasCriterion:
    """``_has:Observation:patient:code=1234``: resources that an Observation's ``patient`` points at,
    where that Observation matches ``criterion`` (which may itself be a HasCriterion)."""

    source_type: str
    reference: ParamDef  # the source type's reference parameter
    criterion: Criterion | HasCriterion


@dataclass(frozen=True, slots=True)
class Include:
    source_type: str
    param: ParamDef       # a reference parameter of source_type
    target_type: str | None
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class SortKey:
    param: ParamDef
    descending: bool


@dataclass(frozen=True, slots=True)
class Search:
    resource_type: str | None                  # None: system-level search
    criteria: tuple[Criterion | HasCriterion, ...] = ()
    count: int | None = None                   # None: the server's default
    sort: tuple[SortKey, ...] = ()
    include: tuple[Include, ...] = ()
    revinclude: tuple[Include, ...] = ()
    summary: Summary | None = None
    elements: tuple[str, ...] = ()
    total: Total | None = None
    cursor: str | None = None                  # the opaque page token of a next/previous link
    ignored: tuple[str, ...] = field(default=())  # parameter names dropped under handling=lenient
