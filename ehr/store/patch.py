"""JSON Patch (RFC 6902) on a stored resource (http.html#patch). The patched resource is validated
like any update; a patch may not change the resource's type or id. FHIRPath Patch is not supported yet.

Why a dependency: jsonpatch (python-json-patch) is the reference Python implementation of RFC 6902
and RFC 6901 pointers, maintained for a decade; re-implementing pointer escaping and the move/copy
edge cases would only add risk.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from ehr.crypto.canonical import parse_json
from ehr.errors import Category, EhrError

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})
MAX_OPERATIONS = 1000


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


def apply(body: bytes, operations: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored resource (canonical bytes) with the operations applied; a failing ``test`` is a
    422 (unprocessable), an operation that does not apply (a missing path) a 422 too."""
    current = parse_json(body)
    try:
        patched = jsonpatch.JsonPatch(copy.deepcopy(operations)).apply(current)
    except jsonpatch.JsonPatchTestFailed:
        raise EhrError(Category.UNPROCESSABLE, "a 'test' operation of the patch failed") from None
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise EhrError(Category.UNPROCESSABLE, f"the patch does not apply: {type(exc).__name__}") from None
    if not isinstance(patched, dict) or patched.get("resourceType") != current["resourceType"]:
        raise EhrError(Category.UNPROCESSABLE, "a patch may not change the resource type")
    if patched.get("id") != current["id"]:
        raise EhrError(Category.UNPROCESSABLE, "a patch may not change the resource id")
    return patched
