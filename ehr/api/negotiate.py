"""Reading what the client asked for: formats (R4 http.html#mime-type), Prefer, preconditions, body."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from starlette.requests import Request

from ehr.crypto.canonical import InvalidJSON, parse_json
from ehr.errors import Category, EhrError
from ehr.etag import etag_version as etag_version  # re-exported for the routes

_JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", "json", "text/json"})
_ANY = frozenset({"*/*", "application/*"})


def check_accept(request: Request) -> None:
    """JSON only for now (XML comes with the conformance issue); anything else is 406."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        if wanted.split(";")[0].strip() not in _JSON_TYPES:
            raise EhrError(Category.NOT_ACCEPTABLE, "only JSON is supported (_format)")
        return
    accept = request.headers.get("accept")
    if not accept:
        return
    media = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if not media & (_JSON_TYPES | _ANY):
        raise EhrError(Category.NOT_ACCEPTABLE, "only application/fhir+json is supported (Accept)")


async def read_resource(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _JSON_TYPES:
        raise EhrError(Category.UNSUPPORTED_MEDIA, "send application/fhir+json")
    body = await read_body(request, limit)
    try:
        return parse_json(body)
    except InvalidJSON as exc:
        raise EhrError(Category.INVALID, f"the body is not valid JSON: {exc}") from None


async def read_patch(request: Request, limit: int) -> Any:
    """A JSON Patch (application/json-patch+json) or a FHIRPath Patch Parameters (application/fhir+json)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _JSON_TYPES:
        parameters = await read_resource(request, limit)
        if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
            raise EhrError(Category.UNSUPPORTED_MEDIA, "a FHIR PATCH body is a FHIRPath Patch Parameters resource")
        return parameters
    if content_type != "application/json-patch+json":
        raise EhrError(Category.UNSUPPORTED_MEDIA, "PATCH takes application/json-patch+json or a FHIRPath Patch")
    try:
        operations = parse_json(await read_body(request, limit))
    except InvalidJSON as exc:
        raise EhrError(Category.INVALID, f"the body is not valid JSON: {exc}") from None
    if not isinstance(operations, list):
        raise EhrError(Category.INVALID, "a JSON Patch body is an array of operations")
    return operations


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise EhrError(Category.TOO_LARGE, f"the body exceeds {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise EhrError(Category.TOO_LARGE, f"the body exceeds {limit} bytes")
    return bytes(body)


def prefer_return(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "return" and value.strip() in ("minimal", "representation", "OperationOutcome"):
            return value.strip()
    return "representation"


def http_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # RFC 9110 13.1.3: an invalid date is ignored


def fhir_instant(value: str, name: str) -> int:
    """An instant parameter such as _since, as microseconds since the epoch."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise EhrError(Category.INVALID, f"{name} must be a FHIR instant") from None
    if moment.tzinfo is None:
        raise EhrError(Category.INVALID, f"{name} needs a time zone")
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def count_param(request: Request, default: int, maximum: int) -> int:
    raw = request.query_params.get("_count")
    if raw is None:
        return default
    if not raw.isdigit():
        raise EhrError(Category.INVALID, "_count must be a non-negative integer")
    return min(int(raw), maximum)


def lenient(request: Request) -> bool:
    """``Prefer: handling=lenient`` (R4 search.html#errors); strict is the default."""
    for header in request.headers.getlist("prefer"):
        for part in header.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "handling":
                return value.strip().strip('"').lower() == "lenient"
    return False
