"""PATCH (http.html#patch) of a stored resource: JSON Patch (RFC 6902, a list of operations) or
FHIRPath Patch (a Parameters resource, ehr/store/fhirpath_patch.py). The patched resource is validated
like any update; a patch may not change the resource's type or id.

Why a dependency: jsonpatch (python-json-patch) is the reference Python implementation of RFC 6902
and RFC 6901 pointers, maintained for a decade; re-implementing pointer escaping and the move/copy
edge cases would only add risk.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from ehr.crypto.canonical import parse_json
from ehr.errors import Category, EhrError
from ehr.store import fhirpath_patch

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
MAX_OPERATIONS = fhirpath_patch.MAX_OPERATIONS


@dataclass(frozen=True, slots=True)
class Patch:
    fhirpath: bool                     # FHIRPath Patch (else JSON Patch)
    operations: list[dict[str, Any]]


def check(document: Any) -> Patch:
    """A JSON Patch list or a FHIRPath Patch Parameters, checked before anything is read."""
    if isinstance(document, dict):
        return Patch(True, fhirpath_patch.check_parameters(document))
    return Patch(False, check_operations(document))


def check_operations(operations: Any) -> list[dict[str, Any]]:
    """The body is a JSON Patch document: a list of operation objects with known ``op`` codes."""
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise EhrError(Category.INVALID, "a JSON Patch body is an array of operation objects")
    if len(operations) > MAX_OPERATIONS:
        raise EhrError(Category.TOO_LARGE, f"a patch may hold at most {MAX_OPERATIONS} operations")
    for n, op in enumerate(operations):
        if op.get("op") not in _OPS or not isinstance(op.get("path"), str):
            raise EhrError(Category.INVALID, f"patch operation {n} needs a known 'op' and a 'path'")
    return operations


def apply(body: bytes, patch: Patch) -> dict[str, Any]:
    """The stored resource (canonical bytes) with the patch applied; a failing ``test`` is a
    422 (unprocessable), an operation that does not apply (a missing path) a 422 too."""
    current = parse_json(body)
    if patch.fhirpath:
        patched = fhirpath_patch.apply(copy.deepcopy(current), patch.operations)
    else:
        patched = _json_patch(current, patch.operations)
    if not isinstance(patched, dict) or patched.get("resourceType") != current["resourceType"]:
        raise EhrError(Category.UNPROCESSABLE, "a patch may not change the resource type")
    if patched.get("id") != current["id"]:
        raise EhrError(Category.UNPROCESSABLE, "a patch may not change the resource id")
    return patched


def _json_patch(current: dict[str, Any], operations: list[dict[str, Any]]) -> Any:
    try:
        return jsonpatch.JsonPatch(copy.deepcopy(operations)).apply(current)
    except jsonpatch.JsonPatchTestFailed:
        raise EhrError(Category.UNPROCESSABLE, "a 'test' operation of the patch failed") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise EhrError(Category.UNPROCESSABLE, f"the patch does not apply: {type(exc).__name__}") from None
