"""A FHIR R4 search request parsed into the model (https://hl7.org/fhir/R4/search.html).

Pure: the parameter definitions come from ``lookup`` (``ehr.fhir.search.definitions.params``),
which must also answer ``lookup("Resource")`` with the parameters every type has (``_id``,
``_lastUpdated``, ``_tag``, ``_profile``, ``_security``, ``_source``): a system-level search may use
only those. Every error is ``EhrError(Category.INVALID)`` naming the parameter, never its value.

- Repeating a parameter ANDs it, commas OR its values (search.html#combining).
- A parameter the server does not know (or a ``special`` one it cannot search) fails under
  ``Prefer: handling=strict`` and is skipped and reported in ``Search.ignored`` under lenient
  (search.html#errors); an unknown modifier fails either way.
- A parameter with an empty value is ignored, whatever its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from ehr.fhir.search.model import Criterion, HasCriterion, Search
from ehr.fhir.search.parse_values import Scope, ValueContext, cap, check_target, invalid, parse_values
from ehr.fhir.search.result_params import NAMES, parse_results
from ehr.fhir.search.values import ParamDef, ParamType

MAX_CRITERIA = 100
MAX_DEPTH = 3      # chain links and _has levels, together
MAX_LENGTH = 1024  # characters in a parameter's name or value

_MODIFIERS: dict[ParamType, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "missing"}),
    "reference": frozenset({"identifier", "missing"}),  # and :[type]
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"above", "below", "missing"}),
    "composite": frozenset(),
    "special": frozenset(),
}
# search.html#modifiers: the R4 modifiers, so that a known but unsupported one gets its own message.
_KNOWN_MODIFIERS = frozenset(
    {"missing", "exact", "contains", "text", "not", "above", "below", "in", "not-in", "of-type", "identifier"}
)


class _Unknown(Exception):
    """A parameter this server cannot search: an error under strict handling, skipped under lenient."""


def parse(
    resource_type: str | None,
    params: Sequence[tuple[str, str]],
    lookup: Callable[[str], Mapping[str, ParamDef]],
    *,
    base: str,
    strict: bool,
    max_count: int,
    resource_types: frozenset[str],
) -> Search:
    """The search of ``resource_type`` (None: the whole system) that ``params`` ask for.

    ``params`` are the decoded query (or form) pairs in order; ``base`` is this server's FHIR base
    URL, whose absolute references are read as local ones.
    """
    scope = Scope(lookup, base.rstrip("/"), resource_types)
    criteria: list[Criterion | HasCriterion] = []
    ignored: dict[str, None] = {}
    results: list[tuple[str, str]] = []
    for key, value in params:
        if value == "":
            continue
        if len(key) > MAX_LENGTH or len(value) > MAX_LENGTH:
            raise invalid(key, f"names and values are limited to {MAX_LENGTH} characters")
        if key.partition(":")[0] in NAMES:
            results.append((key, value))
            continue
        try:
            criteria.append(_criterion(scope, key, resource_type, key, value, 0))
        except _Unknown as unknown:
            if strict:
                raise invalid(key, f"{unknown} (send 'Prefer: handling=lenient' to ignore it)") from None
            ignored[cap(key)] = None
        if len(criteria) > MAX_CRITERIA:
            raise invalid(key, f"at most {MAX_CRITERIA} search criteria in one search")
    search = parse_results(resource_type, results, scope, max_count)
    return replace(search, criteria=tuple(criteria), ignored=tuple(ignored))


def _criterion(
    scope: Scope, name: str, resource_type: str | None, key: str, value: str, depth: int
) -> Criterion | HasCriterion:
    """``key`` (``code[:modifier][.chain]`` or ``_has:...``) on ``resource_type``; ``name`` is the whole key."""
    if depth > MAX_DEPTH:
        raise invalid(name, f"chains and _has may be at most {MAX_DEPTH} deep")
    if key.startswith("_has:"):
        return _has(scope, name, resource_type, key, value, depth)
    head, dot, rest = key.partition(".")
    code, colon, modifier = head.partition(":")
    param = scope.params(resource_type).get(code)
    if param is None:
        raise _Unknown("unknown parameter")
    if param.type == "special":
        raise _Unknown("not supported by this server")
    if dot:
        return _chain(scope, name, param, modifier if colon else None, rest, value, depth)
    return _leaf(scope, name, param, modifier if colon else None, value)


def _leaf(scope: Scope, name: str, param: ParamDef, modifier: str | None, value: str) -> Criterion:
    ctx = ValueContext(name, param, scope)
    if modifier is None:
        return Criterion(param, values=parse_values(value, ctx, None))
    _check_modifier(scope, name, param, modifier)
    if modifier == "missing":
        if value not in ("true", "false"):
            raise invalid(name, ":missing must be true or false")
        return Criterion(param, modifier, missing=value == "true")
    if param.type == "reference" and modifier != "identifier":
        ctx = replace(ctx, type=modifier)
    return Criterion(param, modifier, values=parse_values(value, ctx, modifier))


def _check_modifier(scope: Scope, name: str, param: ParamDef, modifier: str) -> None:
    """search.html#modifiers, by parameter type; a reference's :[type] must be one of its targets."""
    if modifier in _MODIFIERS[param.type]:
        return
    if param.type == "reference" and modifier in scope.resource_types:
        check_target(name, param, modifier, scope.resource_types)
        return
    if modifier in _KNOWN_MODIFIERS:
        raise invalid(name, f"modifier :{modifier} is not supported on {param.type} parameters")
    raise invalid(name, "unknown modifier")


def _chain(
    scope: Scope, name: str, param: ParamDef, modifier: str | None, rest: str, value: str, depth: int
) -> Criterion:
    """search.html#chaining: ``subject:Patient.name=x``, or ``subject.name=x`` when only one target has ``name``;
    both give the same criterion."""
    if param.type != "reference":
        raise invalid(name, "only reference parameters can be chained")
    target = _chain_type(scope, name, param, modifier, rest.partition(".")[0].partition(":")[0])
    inner = _criterion(scope, name, target, rest, value, depth + 1)
    if isinstance(inner, HasCriterion):
        raise invalid(name, "_has cannot follow a chain")
    return Criterion(param, chain=inner, chain_type=target)  # the type is in chain_type, not the modifier


def _chain_type(scope: Scope, name: str, param: ParamDef, modifier: str | None, code: str) -> str:
    """The type a chain goes through: the modifier's, else the one target that has parameter ``code``."""
    if modifier is not None:
        if modifier not in scope.resource_types:
            raise invalid(name, "only a resource type may qualify a chained parameter")
        check_target(name, param, modifier, scope.resource_types)
        return modifier
    if not param.targets:
        raise invalid(name, "the reference may point at any type: name one, as in subject:Patient.name")
    candidates = [t for t in param.targets if t in scope.resource_types and code in scope.params(t)]
    if not candidates:
        raise _Unknown("unknown parameter")
    if len(candidates) > 1:
        raise invalid(name, f"ambiguous chain ({', '.join(candidates)}): add a type modifier such as :{candidates[0]}")
    return candidates[0]


def _has(scope: Scope, name: str, resource_type: str | None, key: str, value: str, depth: int) -> HasCriterion:
    """search.html#has: ``_has:Source:reference:criterion``, the criterion possibly another _has."""
    parts = key.split(":", 3)
    if len(parts) < 4 or not parts[3]:
        raise invalid(name, "expected _has:Type:reference:parameter")
    source, code, rest = parts[1], parts[2], parts[3]
    if source not in scope.resource_types:
        raise invalid(name, "_has names a resource type this server does not know")
    reference = scope.params(source).get(code)
    if reference is None:
        raise _Unknown("unknown parameter")
    if reference.type != "reference":
        raise invalid(name, f"{source}.{code} is not a reference parameter")
    if resource_type is not None and reference.targets and resource_type not in reference.targets:
        raise invalid(name, f"{source}.{code} does not refer to {resource_type}")
    return HasCriterion(source, reference, _criterion(scope, name, source, rest, value, depth + 1))
