"""The criteria of a conditional interaction (http.html#ccreate, #cond-update, #3.1.0.7.1): a search
query on the type, parsed strictly (an unknown parameter must not silently widen what matches)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from ehr.api.services import Services
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Search
from ehr.fhir.search.query import parse
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store.search import supported_params

_RESULT_PARAMETERS = ("_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor")


def criteria(services: Services, res_type: str, query: str, what: str) -> Search:
    if res_type not in RESOURCE_TYPES or res_type == "AuditEvent":
        raise EhrError(Category.NOT_FOUND, "unknown resource type")
    query = query.split("?", 1)[1] if "?" in query else query
    pairs = parse_qsl(query, keep_blank_values=False)
    if any(name.split(":")[0] in _RESULT_PARAMETERS for name, _ in pairs):
        raise EhrError(Category.INVALID, f"{what} takes search criteria only, not result parameters")
    parsed = parse(
        res_type, pairs, supported_params, base=services.base, strict=True,
        max_count=2, resource_types=frozenset(RESOURCE_TYPES),
    )
    if not parsed.criteria:
        raise EhrError(Category.PRECONDITION_FAILED, f"{what} needs at least one search criterion")
    return parsed
