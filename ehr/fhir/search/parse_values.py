"""Search values, parsed by parameter type (https://hl7.org/fhir/R4/search.html#ptypes).

A value is first split on unescaped commas (OR), then each type's parser splits on ``|`` or ``$``
as its syntax says, and only the leaves are unescaped (search.html#escaping: ``\\,`` ``\\$``
``\\|`` ``\\\\``). Errors name the parameter and never repeat the value, which may be patient data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import get_args

from ehr.errors import Category, EhrError
from ehr.fhir.search.model import (
    DateQuery,
    NumberQuery,
    Prefix,
    QuantityQuery,
    QueryValue,
    ReferenceQuery,
    TokenQuery,
)
from ehr.fhir.search.precision import date_range, decimal_range
from ehr.fhir.search.values import ParamDef, ParamType

MAX_VALUES = 100  # ORed values in one parameter
MAX_SHOWN = 64    # characters of a parameter name repeated in a message

_PREFIXES: dict[str, Prefix] = {prefix: prefix for prefix in get_args(Prefix)}
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)  # datatypes.html#id
_ESCAPED = re.compile(r"\\([\\,$|])")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a search is parsed against: the definitions, this server's base URL, the known types."""

    lookup: Callable[[str], Mapping[str, ParamDef]]
    base: str  # without a trailing slash
    resource_types: frozenset[str]

    def params(self, resource_type: str | None) -> Mapping[str, ParamDef]:
        """The parameters of a type, with the ones every resource has (lookup("Resource"))."""
        common = self.lookup("Resource")
        return common if resource_type is None else {**common, **self.lookup(resource_type)}


@dataclass(frozen=True, slots=True)
class ValueContext:
    name: str          # the parameter as the client wrote it, for messages
    param: ParamDef
    scope: Scope
    type: str | None = None  # a reference parameter's :Type modifier


ValueParser = Callable[[str, ValueContext], QueryValue]


def cap(name: str) -> str:
    """A parameter name short and printable enough to repeat."""
    short = "".join(c if c.isprintable() else "?" for c in name[:MAX_SHOWN])
    return short + ("..." if len(name) > MAX_SHOWN else "")


def invalid(name: str, problem: str) -> EhrError:
    return EhrError(Category.INVALID, f"search parameter '{cap(name)}': {problem}")


def split_escaped(text: str, separator: str, limit: int = -1) -> list[str]:
    """``text`` split on unescaped ``separator`` (at most ``limit`` times); escapes are kept."""
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == separator and limit != 0:
            parts.append(text[start:i])
            start, limit = i + 1, limit - 1
        i += 1
    return [*parts, text[start:]]


def unescape(text: str) -> str:
    """``\\,`` ``\\$`` ``\\|`` ``\\\\`` to the character; any other backslash stays as written."""
    return _ESCAPED.sub(r"\1", text)


def parse_values(raw: str, ctx: ValueContext, modifier: str | None) -> tuple[QueryValue, ...]:
    """The ORed values of one occurrence; empty alternatives (``a,,b``) are dropped."""
    parser = _MODIFIED.get((ctx.param.type, modifier)) or _PARSERS.get(ctx.param.type)
    if parser is None:
        raise invalid(ctx.name, f"{ctx.param.type} parameters are not supported")
    alternatives = [part for part in split_escaped(raw, ",") if part]
    if len(alternatives) > MAX_VALUES:
        raise invalid(ctx.name, f"at most {MAX_VALUES} values separated by commas")
    return tuple(parser(part, ctx) for part in alternatives)


def check_target(name: str, param: ParamDef, type_: str, resource_types: frozenset[str]) -> None:
    """search.html#reference: the type must be one the parameter may point at."""
    if type_ not in resource_types:
        raise invalid(name, "not a resource type this server knows")
    if param.targets and type_ not in param.targets:
        raise invalid(name, f"does not refer to {type_} (allowed: {', '.join(param.targets)})")


def _text(raw: str, ctx: ValueContext) -> QueryValue:
    return unescape(raw)


def _token(raw: str, ctx: ValueContext) -> QueryValue:
    """``code``, ``system|code``, ``|code`` (no system) or ``system|`` (search.html#token)."""
    parts = split_escaped(raw, "|", 1)
    if len(parts) == 1:
        return TokenQuery(None, unescape(raw))
    system, code = unescape(parts[0]), unescape(parts[1]) or None
    if not system and code is None:
        raise invalid(ctx.name, "a token needs a system, a code or both")
    return TokenQuery(system, code)


def _prefixed(raw: str) -> tuple[Prefix, str]:
    """search.html#prefix: a leading eq ne gt lt ge le sa eb ap; eq when there is none."""
    text = unescape(raw)
    prefix = _PREFIXES.get(text[:2])
    return (prefix, text[2:]) if prefix else ("eq", text)


def _date(raw: str, ctx: ValueContext) -> QueryValue:
    prefix, text = _prefixed(raw)
    try:
        low, high = date_range(text)
    except ValueError:
        raise invalid(ctx.name, "expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|+hh:mm]]]]") from None
    return DateQuery(prefix, low, high)


def _number(raw: str, ctx: ValueContext) -> NumberQuery:
    prefix, text = _prefixed(raw)
    try:
        value, low, high = decimal_range(text)
    except ValueError:
        raise invalid(ctx.name, "expected [prefix]number, e.g. gt100 or 1.5e2") from None
    return NumberQuery(prefix, value, low, high)


def _quantity(raw: str, ctx: ValueContext) -> QueryValue:
    """``[prefix]number``, ``number|system|code`` or ``number||code`` (search.html#quantity)."""
    parts = split_escaped(raw, "|")
    if len(parts) not in (1, 3):
        raise invalid(ctx.name, "expected [prefix]number[|system|code]")
    number = _number(parts[0], ctx)
    if len(parts) == 1:
        return QuantityQuery(number, None, None)
    return QuantityQuery(number, unescape(parts[1]) or None, unescape(parts[2]) or None)


def _reference(raw: str, ctx: ValueContext) -> QueryValue:
    """``id``, ``Type/id``, ``Type/id/_history/n`` or an absolute URL (search.html#reference)."""
    text = unescape(raw)
    if text.startswith(ctx.scope.base + "/"):
        text = text[len(ctx.scope.base) + 1 :]
    elif ":" in text:  # an absolute URL elsewhere, a urn or a canonical (kept whole, |version included)
        return ReferenceQuery(None, None, url=text)
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    type_, id_ = (ctx.type, parts[0]) if len(parts) == 1 else (parts[0], parts[-1])
    if len(parts) > 2 or _ID.fullmatch(id_) is None:
        raise invalid(ctx.name, "expected id, Type/id or an absolute URL")
    if ctx.type is not None and type_ != ctx.type:
        raise invalid(ctx.name, "the value's type differs from the type modifier")
    if type_ is not None:
        check_target(ctx.name, ctx.param, type_, ctx.scope.resource_types)
    return ReferenceQuery(type_, id_)


def _composite(raw: str, ctx: ValueContext) -> QueryValue:
    """One part per component, separated by ``$`` (search.html#composite)."""
    components = ctx.param.components
    parts = split_escaped(raw, "$")
    if not components or len(parts) != len(components) or not all(parts):
        raise invalid(ctx.name, f"expected {len(components)} non-empty parts separated by $")
    values: list[QueryValue] = []
    for component, part in zip(components, parts, strict=True):
        parser = _PARSERS.get(component.type)
        if parser is None or component.type == "composite":
            raise invalid(ctx.name, f"{component.type} components are not supported")
        param = ParamDef(component.code, component.type, "", component.expression)
        values.append(parser(part, replace(ctx, param=param)))
    return tuple(values)


_PARSERS: dict[ParamType, ValueParser] = {
    "string": _text,
    "uri": _text,
    "token": _token,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "reference": _reference,
    "composite": _composite,
}
_MODIFIED: dict[tuple[ParamType, str | None], ValueParser] = {
    ("token", "text"): _text,
    ("reference", "identifier"): _token,
}
