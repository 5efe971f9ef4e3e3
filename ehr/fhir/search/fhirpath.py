"""Compile the FHIRPath of R4 search parameters into plain Python closures over resource JSON.

Spec: http://hl7.org/fhirpath/N1/ (the subset in :mod:`fhirpath_syntax`) and
http://hl7.org/fhir/R4/fhirpath.html (FHIR's model of it). The element types come from the
validator's tables at compile time, so evaluation is only dict look-ups: a value is a
:data:`Node`, ``(json_value, fhir_type)``, where the type is what the element is declared as
(``Quantity``, ``dateTime``, ``Observation.component``...). A choice element without a type
filter (``Observation.effective``) yields whichever ``effective[x]`` is present, with its type.
Primitive extension siblings (``_birthDate``) are not values and are never visited.

Input must be a resource that passed :func:`ehr.fhir.validator.validate` (shapes are trusted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ehr.fhir.search import fhirpath_steps as steps
from ehr.fhir.search import fhirtypes
from ehr.fhir.search.fhirpath_steps import Evaluate, Json, Key, Node, Nodes
from ehr.fhir.search.fhirpath_syntax import Binary, Expr, FhirPathError, Index, Invoke, Literal, TypeOp, parse

__all__ = ["Compiled", "Evaluate", "FhirPathError", "Keys", "Node", "Nodes", "compile_path"]

Keys = frozenset[str] | None
_Part = tuple[Evaluate, frozenset[str], Keys]
_ROOTS = ("resource", "rootResource")
_ALWAYS: Keys = None
_TOTAL = ("exists", "hasExtension")  # functions with a result (false) on an empty collection


@dataclass(frozen=True, slots=True)
class Compiled:
    evaluate: Evaluate
    types: frozenset[str]  # every FHIR type a result node can have
    keys: Keys             # JSON keys of the focus one of which a non-empty result needs (None: unknown)

    def run(self, resource: Json) -> Nodes:
        """The result with ``resource`` as focus and ``%resource``."""
        return self.evaluate([(resource, resource["resourceType"])], resource)


def compile_path(expression: str, context: Iterable[str], resource_type: str) -> Compiled:
    """Compile ``expression`` for focus nodes of the ``context`` types inside a ``resource_type``.

    Raises :class:`FhirPathError` for syntax outside the subset, unknown elements or types, and
    type filters that can never match: such a parameter cannot be indexed faithfully."""
    return Compiled(*_Compiler(resource_type).compile(parse(expression), frozenset(context)))


class _Compiler:
    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type

    def compile(self, tree: Expr, types: frozenset[str]) -> _Part:
        if isinstance(tree, Invoke):
            return self.invoke(tree, types)
        if isinstance(tree, Binary):
            return self.binary(tree, types)
        if isinstance(tree, TypeOp):
            return self.type_op(tree.target, tree.op, tree.type_name, types)
        if isinstance(tree, Index):
            target, out, keys = self.compile(tree.target, types)
            n = tree.index
            return (lambda focus, resource: target(focus, resource)[n:n + 1]), out, keys
        if isinstance(tree, Literal):
            kind = {bool: "boolean", int: "integer", str: "string"}[type(tree.value)]
            constant: Nodes = [(tree.value, kind)]
            return (lambda focus, resource: constant), frozenset({kind}), _ALWAYS
        if tree.name not in _ROOTS:
            raise FhirPathError(f"unsupported variable %{tree.name}")
        root = self.resource_type
        return (lambda focus, resource: [(resource, root)]), frozenset({root}), _ALWAYS

    def invoke(self, tree: Invoke, types: frozenset[str], only: frozenset[str] | None = None) -> _Part:
        if tree.target is None and tree.args is None and tree.name[:1].isupper():
            return _type_filter(tree.name, types, self.resource_type)
        if tree.name in ("as", "ofType") and tree.args and isinstance(tree.args[0], Invoke):
            return self.type_op(tree.target, "as", tree.args[0].name, types)
        target: Evaluate = steps.identity
        keys = _ALWAYS
        if tree.target is not None:
            target, types, keys = self.compile(tree.target, types)
        if tree.args is None:
            step, out, own = _member(tree.name, types, only)
        else:
            step, out, own = self.function(tree.name, tree.args, types)
        if target is steps.identity:
            keys = own
        elif tree.name in _TOTAL:
            keys = _ALWAYS
        return steps.then(target, step), out, keys

    def function(self, name: str, args: tuple[Expr, ...], types: frozenset[str]) -> _Part:
        """A function on the focus; the keys are those it needs when the focus is the context."""
        if name == "where" and len(args) == 1:
            condition, _, _ = self.compile(args[0], types)
            fast = _property_equals(args[0], types)
            return steps.where_equals(*fast) if fast else steps.where(condition), types, _ALWAYS
        if name in ("extension", "hasExtension") and len(args) == 1 and isinstance(args[0], Literal):
            if not types or not types <= fhirtypes.complex_types().keys():
                raise FhirPathError(f"{name}() on {sorted(types)}: only complex values carry extensions here")
            found = steps.extensions(str(args[0].value))
            if name == "extension":
                return found, frozenset({"Extension"}), frozenset({"extension"})
            return steps.then(found, steps.exists), frozenset({"boolean"}), _ALWAYS
        if name == "exists" and not args:
            return steps.exists, frozenset({"boolean"}), _ALWAYS
        if name == "resolve" and not args and types <= {"Reference"}:
            return steps.resolve, frozenset({fhirtypes.RESOURCE}), _ALWAYS
        raise FhirPathError(f"unsupported function {name}() on {sorted(types)}")

    def type_op(self, target: Expr | None, op: str, name: str, types: frozenset[str]) -> _Part:
        try:
            accepted = fhirtypes.accepted(fhirtypes.type_name(name))
        except KeyError:
            raise FhirPathError(f"unknown type {name}") from None
        if op == "as" and _is_member(target):
            assert isinstance(target, Invoke)
            return self.invoke(target, types, only=accepted)  # (x.value as Quantity): only valueQuantity
        source: Evaluate = steps.identity
        keys = _ALWAYS
        if target is not None:
            source, types, keys = self.compile(target, types)
        out = types & accepted if fhirtypes.RESOURCE not in types else accepted
        if not out:
            raise FhirPathError(f"{sorted(types)} is never a {name}")
        if op == "is":
            return steps.then(source, steps.is_type(accepted)), frozenset({"boolean"}), keys
        return steps.then(source, steps.keep_types(accepted)), out, keys

    def binary(self, tree: Binary, types: frozenset[str]) -> _Part:
        left, left_types, left_keys = self.compile(tree.left, types)
        right, right_types, right_keys = self.compile(tree.right, types)
        if tree.op == "|":
            keys = None if left_keys is None or right_keys is None else left_keys | right_keys
            union: Evaluate = lambda focus, resource: left(focus, resource) + right(focus, resource)  # noqa: E731
            return union, left_types | right_types, keys
        combine = {"and": steps.both, "=": steps.equal, "!=": steps.not_equal}[tree.op]
        operation: Evaluate = lambda focus, resource: combine(left(focus, resource), right(focus, resource))  # noqa: E731
        return operation, frozenset({"boolean"}), _ALWAYS


def _type_filter(name: str, types: frozenset[str], resource_type: str) -> _Part:
    """A path that starts with a type name (``Observation.code``) keeps the focus nodes of that
    type; ``Resource``/``DomainResource`` match the resource being indexed."""
    kept = types & fhirtypes.accepted(name) if name in fhirtypes.type_names() else frozenset()
    if name in ("Resource", "DomainResource") and resource_type in types:
        kept = frozenset({resource_type})
    if not kept:
        raise FhirPathError(f"{name} is not the context {sorted(types)}")
    if kept == types:
        return steps.identity, kept, _ALWAYS
    return steps.keep_types(kept), kept, _ALWAYS


def _property_equals(tree: Expr, types: frozenset[str]) -> tuple[str, str] | None:
    """(key, literal) when ``tree`` is ``name = 'literal'`` on a single-valued primitive element of
    every focus type (``telecom.where(system='phone')``): one dict look-up per node."""
    if not (isinstance(tree, Binary) and tree.op == "=" and isinstance(tree.right, Literal)):
        return None
    left, literal = tree.left, tree.right.value
    if not (isinstance(left, Invoke) and left.target is None and left.args is None and isinstance(literal, str)):
        return None
    kinds = [fhirtypes.complex_types().get(t) for t in types]
    elements = [kind.elements.get(left.name) if kind else None for kind in kinds]
    if all(e is not None and not e.many and e.check is not None for e in elements):
        return left.name, literal
    return None


def _is_member(tree: Expr | None) -> bool:
    """Whether ``tree`` navigates to an element (rather than starting a path with a type name)."""
    return isinstance(tree, Invoke) and tree.args is None and not tree.name[:1].isupper()


def _member(name: str, types: frozenset[str], only: frozenset[str] | None = None) -> _Part:
    """Navigation to a child element; ``name`` may be a choice (``value`` -> ``value[x]``), of
    which ``only`` keeps the variants of some types (a fused ``as``)."""
    plan: dict[str, tuple[Key, ...]] = {}
    for type_name in types:
        kind = fhirtypes.complex_types().get(type_name)
        keys = () if kind is None else tuple(
            (key, e.many, e.type_name) for key, e in sorted(kind.elements.items())
            if (key == name or e.choice == name) and (only is None or e.type_name in only)
        )
        if keys:
            plan[type_name] = keys
    if not plan:
        raise FhirPathError(f"no element {name!r} of the types asked for on {sorted(types)}")
    out = frozenset(key[2] for keys in plan.values() for key in keys)
    json_keys = frozenset(key[0] for keys in plan.values() for key in keys)
    if len(plan) == 1 and len(types) == 1:
        return steps.members(next(iter(plan.values()))), out, json_keys
    return steps.dispatch({t: steps.members(keys) for t, keys in plan.items()}), out, json_keys
