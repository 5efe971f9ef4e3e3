"""FHIRPath Patch (R4 fhirpatch.html): a Parameters resource of ``operation`` parameters, each with
a ``type`` (add, insert, delete, replace, move) and a FHIRPath ``path`` to the element it works on.

Paths use the FHIRPath subset of the search definitions (ehr/fhir/search/fhirpath_syntax.py):
members, ``[n]``, ``first()``, ``last()`` and ``where(<member path> = 'literal')``. Evaluation keeps,
for every element found, where it sits (its parent object, its JSON name, its list position) and its
FHIR type, so an operation can change the element in place and knows whether a name repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ehr.errors import Category, EhrError
from ehr.fhir.definitions import ComplexType, definitions
from ehr.fhir.search.fhirpath_syntax import Binary, Expr, FhirPathError, Index, Invoke, Literal, parse

MAX_OPERATIONS = 1000


@dataclass(frozen=True, slots=True)
class Place:
    parent: dict[str, Any] | None  # None: the resource itself
    name: str
    index: int | None
    kind: ComplexType | None       # the element's type, when complex

    def value(self, root: dict[str, Any]) -> Any:
        if self.parent is None:
            return root
        held = self.parent[self.name]
        return held[self.index] if self.index is not None else held


def _fail(message: str) -> EhrError:
    return EhrError(Category.UNPROCESSABLE, f"FHIRPath Patch: {message}")


def _places(expr: Expr, root: dict[str, Any]) -> list[Place]:
    match expr:
        case Invoke(target=None, name=name, args=None) if name == root.get("resourceType"):
            return [Place(None, name, None, definitions().resources.get(name))]
        case Invoke(target=target, name=name, args=None) if target is not None:
            return [child for place in _places(target, root) for child in _children(place, root, name)]
        case Index(target=target, index=n):
            found = _places(target, root)
            return found[n : n + 1]
        case Invoke(target=target, name="first" | "last" as which, args=()) if target is not None:
            found = _places(target, root)
            return found[:1] if which == "first" else found[-1:]
        case Invoke(target=target, name="where", args=(Binary(op="=", left=left, right=Literal(value=want)),)) \
                if target is not None:
            return [p for p in _places(target, root) if want in _values(left, p.value(root))]
    raise _fail("the path is outside the supported FHIRPath subset")


def _children(place: Place, root: dict[str, Any], name: str) -> list[Place]:
    node = place.value(root)
    if not isinstance(node, dict):
        return []
    key = name if name in node else next((k for k in node if k.startswith(name) and k[len(name):][:1].isupper()), None)
    if key is None:
        return []
    element = place.kind.elements.get(key) if place.kind is not None else None
    kind = element.complex if element is not None else None
    held = node[key]
    if isinstance(held, list):
        return [Place(node, key, n, kind) for n in range(len(held))]
    return [Place(node, key, None, kind)]


def _values(expr: Expr, focus: Any) -> list[Any]:
    """The values of a relative member path (``system``, ``code.text``) on one element."""
    match expr:
        case Invoke(target=None, name=name, args=None):
            found = focus.get(name) if isinstance(focus, dict) else None
        case Invoke(target=target, name=name, args=None) if target is not None:
            return [v for parent in _values(target, focus) for v in _values(Invoke(None, name, None), parent)]
        case _:
            raise _fail("where() takes a member path compared with a literal")
    if found is None:
        return []
    return found if isinstance(found, list) else [found]


def _value(part: dict[str, Any]) -> Any:
    """An operation's value: a ``value[x]``, or a complex value given as nested parts."""
    for key, held in part.items():
        if key.startswith("value") and key[5:6].isupper():
            return held
    if isinstance(part.get("part"), list):
        return {p["name"]: _value(p) for p in part["part"] if isinstance(p, dict) and isinstance(p.get("name"), str)}
    raise _fail("an operation needs a value")


def check_parameters(document: Any) -> list[dict[str, Any]]:
    """The operations of a FHIRPath Patch Parameters resource, each as {name: part}."""
    if not isinstance(document, dict) or document.get("resourceType") != "Parameters":
        raise EhrError(Category.INVALID, "a FHIRPath Patch is a Parameters resource")
    operations = []
    for parameter in document.get("parameter") or []:
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise EhrError(Category.INVALID, "a FHIRPath Patch holds only 'operation' parameters")
        given = [p for p in parameter.get("part") or [] if isinstance(p, dict) and isinstance(p.get("name"), str)]
        parts = {p["name"]: p for p in given}
        if parts.get("type", {}).get("valueCode") not in ("add", "insert", "delete", "replace", "move"):
            raise EhrError(Category.INVALID, "each operation needs a type: add, insert, delete, replace or move")
        if not isinstance(parts.get("path", {}).get("valueString"), str):
            raise EhrError(Category.INVALID, "each operation needs a path")
        operations.append(parts)
    if len(operations) > MAX_OPERATIONS:
        raise EhrError(Category.TOO_LARGE, f"a patch may hold at most {MAX_OPERATIONS} operations")
    return operations


def apply(resource: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """``resource`` (a fresh copy the caller owns) with the operations applied in order."""
    for parts in operations:
        try:
            path = parse(parts["path"]["valueString"])
        except FhirPathError:
            raise _fail("the path is not valid FHIRPath") from None
        _OPERATIONS[parts["type"]["valueCode"]](resource, _places(path, resource), parts)
    return resource


def _add(root: dict[str, Any], found: list[Place], parts: dict[str, Any]) -> None:
    target = _one(found, "add")
    node, name = target.value(root), parts.get("name", {}).get("valueString")
    if not isinstance(node, dict) or not isinstance(name, str):
        raise _fail("add needs a path to an element and a name")
    element = target.kind.elements.get(name) if target.kind is not None else None
    value = _value(parts.get("value", {}))
    if element is not None and element.many:
        node.setdefault(name, []).append(value)
    elif name in node:
        raise _fail(f"'{name}' is already present; use replace")
    else:
        node[name] = value


def _insert(root: dict[str, Any], found: list[Place], parts: dict[str, Any]) -> None:
    listed = _list_of(found, "insert")
    index = parts.get("index", {}).get("valueInteger")
    if not isinstance(index, int) or not 0 <= index <= len(listed):
        raise _fail("insert needs an index within the list")
    listed.insert(index, _value(parts.get("value", {})))


def _delete(root: dict[str, Any], found: list[Place], _parts: dict[str, Any]) -> None:
    if not found:
        return  # R4: deleting what is not there is not an error
    place = _one(found, "delete")
    if place.parent is None:
        raise _fail("the resource itself cannot be deleted by a patch")
    if place.index is None:
        del place.parent[place.name]
        return
    del place.parent[place.name][place.index]
    if not place.parent[place.name]:
        del place.parent[place.name]


def _replace(root: dict[str, Any], found: list[Place], parts: dict[str, Any]) -> None:
    place = _one(found, "replace")
    if place.parent is None:
        raise _fail("the resource itself cannot be replaced by a patch")
    value = _value(parts.get("value", {}))
    if place.index is None:
        place.parent[place.name] = value
    else:
        place.parent[place.name][place.index] = value


def _move(root: dict[str, Any], found: list[Place], parts: dict[str, Any]) -> None:
    listed = _list_of(found, "move")
    source, destination = (parts.get(k, {}).get("valueInteger") for k in ("source", "destination"))
    if not all(isinstance(n, int) and 0 <= n < len(listed) for n in (source, destination)):
        raise _fail("move needs a source and a destination within the list")
    assert isinstance(source, int) and isinstance(destination, int)
    listed.insert(destination, listed.pop(source))


def _one(found: list[Place], what: str) -> Place:
    if len(found) != 1:
        raise _fail(f"the path of a {what} must match exactly one element (it matched {len(found)})")
    return found[0]


def _list_of(found: list[Place], what: str) -> list[Any]:
    if not found or found[0].parent is None or found[0].index is None:
        raise _fail(f"the path of a {what} must name a list")
    listed: list[Any] = found[0].parent[found[0].name]
    return listed


_OPERATIONS = {"add": _add, "insert": _insert, "delete": _delete, "replace": _replace, "move": _move}
