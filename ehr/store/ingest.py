"""From a client's resource to the canonical bytes that get stored: check, validate, stamp."""

from __future__ import annotations

import re
from typing import Any

from ehr.crypto.canonical import canonical_json
from ehr.errors import Category, Detail, EhrError
from ehr.fhir.validator import RESOURCE_TYPES, validate

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Issue codes that mean "the content breaks a rule" rather than "the structure is wrong" (422, not 400).
_RULE_CODES = frozenset({"invariant", "code-invalid", "business-rule"})


def check_type(res_type: str) -> None:
    if res_type not in RESOURCE_TYPES:
        raise EhrError(Category.NOT_FOUND, "unknown resource type")


def check_id(res_id: str) -> None:
    if not _ID.match(res_id):
        raise EhrError(Category.INVALID, "invalid resource id (1-64 of A-Z a-z 0-9 - .)")


def check_resource(resource: Any, res_type: str, res_id: str | None) -> None:
    """The body is a valid R4 resource of the type in the URL; for an update, its id is the URL's."""
    if not isinstance(resource, dict) or "resourceType" not in resource:
        raise EhrError(Category.INVALID, "the body is not a FHIR resource (no resourceType)")
    if resource["resourceType"] != res_type:
        raise EhrError(Category.INVALID, "resourceType in the body does not match the URL")
    if res_id is not None and resource.get("id") != res_id:
        raise EhrError(Category.INVALID, "the resource id in the body must equal the id in the URL")
    issues = validate(resource)
    if issues:
        category = Category.UNPROCESSABLE if all(i.code in _RULE_CODES for i in issues) else Category.STRUCTURE
        details = [Detail(i.diagnostics, i.code, i.expression) for i in issues[:100]]
        raise EhrError(category, f"the resource is not valid FHIR R4 ({len(issues)} issue(s))", details)


def stamp(resource: dict[str, Any], res_id: str, version: int, last_updated: str) -> bytes:
    """Canonical bytes of the resource with the server's id and meta.versionId/lastUpdated."""
    meta = dict(resource.get("meta") or {})
    meta.pop("_versionId", None)
    meta.pop("_lastUpdated", None)
    meta["versionId"] = str(version)
    meta["lastUpdated"] = last_updated
    stamped = {**resource, "id": res_id, "meta": meta}
    stamped.pop("_id", None)
    return canonical_json(stamped)

