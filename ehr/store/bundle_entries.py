"""Bundle entries as requests (http.html#transaction): what each entry asks to do, parsed and
checked before anything is written. Pure; shared by ``POST [base]`` and ``ehr import``."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import urlsplit

from ehr.crypto.canonical import InvalidJSON, parse_json
from ehr.errors import Category, EhrError
from ehr.etag import etag_version
from ehr.store.bundle import Request
from ehr.store.search import criteria_of

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON_PATCH = "application/json-patch+json"
Read = tuple[list[str], str]  # a GET entry: path segments and query


def parse_entry(base: str, index: int, entry: dict[str, Any]) -> Request | Read:
    """A write request, or a read's (segments, query)."""
    request = entry.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        raise EhrError(Category.STRUCTURE, "an entry needs request.method and request.url")
    method, url = str(request.get("method", "")), relative(base, request["url"])
    if method in ("GET", "HEAD"):
        return read_target(url)
    if method not in _WRITES:
        raise EhrError(Category.INVALID, "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE")
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (method == "POST" and len(parts) != 1):
        raise EhrError(Category.INVALID, "request.url must be Type, Type/id or Type?criteria for this method")
    res_type, res_id = parts[0], parts[1] if len(parts) == 2 else None
    write = Request(index, method, res_type, res_id, full_url=entry.get("fullUrl"))
    write.if_match = etag_version(request.get("ifMatch"), "ifMatch")
    conditional = request.get("ifNoneExist") if method == "POST" else query if res_id is None else None
    if method != "POST" and res_id is None and not query:
        raise EhrError(Category.INVALID, "request.url needs an id or search criteria")
    if conditional:
        write.criteria = criteria_of(res_type, str(conditional), base, f"{method} criteria")
        write.query = str(conditional)
    write.resource = patch_body(entry.get("resource")) if method == "PATCH" else entry.get("resource")
    if method in ("POST", "PUT") and not isinstance(write.resource, dict):
        raise EhrError(Category.INVALID, f"a {method} entry needs a resource")
    return write


def resource_request(index: int, resource: Any) -> Request:
    """A bare resource to load (NDJSON line, collection entry): under its own id when it has one
    (references between loaded resources keep working), else a new one."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        raise EhrError(Category.INVALID, "not a FHIR resource (no resourceType)")
    res_id = resource.get("id")
    if isinstance(res_id, str):
        return Request(index, "PUT", resource["resourceType"], res_id, resource=resource)
    return Request(index, "POST", resource["resourceType"], resource=resource)


def read_target(url: str) -> Read:
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if len(parts) in (1, 2) or (len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit()):
        return parts, query
    raise EhrError(Category.INVALID, "a GET entry's url must be Type, Type/id, Type/id/_history/n or Type?query")


def patch_body(resource: Any) -> Any:
    """R4 carries a FHIRPath Patch in a bundle as its Parameters, a JSON Patch as a Binary
    (contentType application/json-patch+json)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Parameters":
        return resource
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise EhrError(Category.UNSUPPORTED_MEDIA, "a PATCH entry takes a Parameters or a Binary holding a JSON Patch")
    if resource.get("contentType") != _JSON_PATCH:
        raise EhrError(Category.UNSUPPORTED_MEDIA, f"the Binary must be {_JSON_PATCH}")
    try:
        return parse_json(base64.b64decode(str(resource.get("data", "")), validate=True))
    except (binascii.Error, ValueError, InvalidJSON):
        raise EhrError(Category.INVALID, "the Binary's data is not base64 JSON") from None


def relative(base: str, url: str) -> str:
    if url.startswith(base + "/"):
        return url[len(base) + 1 :]
    if urlsplit(url).scheme:
        raise EhrError(Category.INVALID, "request.url must be relative to this server")
    return url.lstrip("/")
