"""FHIR R4 RESTful interactions (http.html). Each handler parses, calls the store once, renders.

Routed by ehr/api/router.py (the table at the end)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from ehr.api import negotiate, render
from ehr.api.router import Handler
from ehr.api.scope import context_of, services_of
from ehr.crypto.canonical import canonical_json
from ehr.errors import Category, EhrError, information_outcome
from ehr.store.records import Version
from ehr.store.search import criteria_of


def _path(request: Request, *names: str) -> list[str]:
    return [request.path_params[name] for name in names]



async def capabilities(request: Request) -> Response:
    negotiate.check_accept(request)
    return render.fhir(200, services_of(request).capability_statement)


async def history_system(request: Request) -> Response:
    return await _history(request, None, None)


async def history_type(request: Request) -> Response:
    (res_type,) = _path(request, "res_type")
    return await _history(request, res_type, None)


async def history_instance(request: Request) -> Response:
    res_type, res_id = _path(request, "res_type", "res_id")
    return await _history(request, res_type, res_id)


async def read(request: Request) -> Response:
    res_type, res_id = _path(request, "res_type", "res_id")
    negotiate.check_accept(request)
    services = services_of(request)
    found = await services.store.read(context_of(request), res_type, res_id)
    headers = render.version_headers(found)
    if _not_modified(request, found):
        return render.fhir(304, None, headers)
    return render.fhir(200, found.body, headers)


async def vread(request: Request) -> Response:
    res_type, res_id, version = _path(request, "res_type", "res_id", "version")
    negotiate.check_accept(request)
    if not version.isdigit() or len(version) > 9:
        raise EhrError(Category.NOT_FOUND, "no such version")
    services = services_of(request)
    found = await services.store.vread(context_of(request), res_type, res_id, int(version))
    headers = render.version_headers(found)
    return render.fhir(200, found.body, headers)


async def create(request: Request) -> Response:
    (res_type,) = _path(request, "res_type")
    negotiate.check_accept(request)
    services = services_of(request)
    resource = await negotiate.read_resource(request, services.settings.max_body_bytes)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist is None:
        written = await services.store.create(context_of(request), res_type, resource)
        return _written(request, written, 201, services.base)
    criteria = criteria_of(res_type, if_none_exist, services.base, "If-None-Exist")
    result = await services.store.conditional_create(
        context_of(request), res_type, resource, criteria, query=if_none_exist
    )
    return _written(request, result.version, 201 if result.created else 200, services.base)


async def conditional_update(request: Request) -> Response:
    (res_type,) = _path(request, "res_type")
    negotiate.check_accept(request)
    services = services_of(request)
    if_match = negotiate.etag_version(request.headers.get("if-match"), "If-Match")
    criteria = criteria_of(res_type, request.url.query, services.base, "conditional update")
    resource = await negotiate.read_resource(request, services.settings.max_body_bytes)
    result = await services.store.conditional_update(
        context_of(request), res_type, criteria, resource, query=request.url.query, if_match=if_match
    )
    return _written(request, result.version, 201 if result.created else 200, services.base)


async def conditional_delete(request: Request) -> Response:
    (res_type,) = _path(request, "res_type")
    negotiate.check_accept(request)
    services = services_of(request)
    criteria = criteria_of(res_type, request.url.query, services.base, "conditional delete")
    tombstone = await services.store.conditional_delete(
        context_of(request), res_type, criteria, query=request.url.query
    )
    return _deleted(request, tombstone)


async def update(request: Request) -> Response:
    res_type, res_id = _path(request, "res_type", "res_id")
    negotiate.check_accept(request)
    services = services_of(request)
    if_match = negotiate.etag_version(request.headers.get("if-match"), "If-Match")
    resource = await negotiate.read_resource(request, services.settings.max_body_bytes)
    result = await services.store.update(context_of(request), res_type, res_id, resource, if_match)
    return _written(request, result.version, 201 if result.created else 200, services.base)


async def patch(request: Request) -> Response:
    res_type, res_id = _path(request, "res_type", "res_id")
    negotiate.check_accept(request)
    services = services_of(request)
    if_match = negotiate.etag_version(request.headers.get("if-match"), "If-Match")
    operations = await negotiate.read_patch(request, services.settings.max_body_bytes)
    patched = await services.store.patch(context_of(request), res_type, res_id, operations, if_match)
    return _written(request, patched, 200, services.base)


async def delete(request: Request) -> Response:
    res_type, res_id = _path(request, "res_type", "res_id")
    negotiate.check_accept(request)
    if_match = negotiate.etag_version(request.headers.get("if-match"), "If-Match")
    tombstone = await services_of(request).store.delete(context_of(request), res_type, res_id, if_match)
    return _deleted(request, tombstone)


def _deleted(request: Request, tombstone: Version | None) -> Response:
    headers = {"ETag": tombstone.etag} if tombstone else {}
    if negotiate.prefer_return(request) == "OperationOutcome":
        message = "deleted" if tombstone else "nothing to delete"
        return render.fhir(200, canonical_json(information_outcome(message)), headers)
    return render.fhir(204, None, headers)


async def _history(request: Request, res_type: str | None, res_id: str | None) -> Response:
    negotiate.check_accept(request)
    services = services_of(request)
    settings = services.settings
    params = request.query_params
    count = negotiate.count_param(request, settings.page_size_default, settings.page_size_max)
    since = params.get("_since")
    since_us = negotiate.fhir_instant(since, "_since") if since else None
    cursor = None
    if "_cursor" in params:
        try:
            cursor = render.decode_cursor(params["_cursor"])
        except ValueError:
            raise EhrError(Category.INVALID, "_cursor is not a cursor from this server") from None
    page = await services.store.history(
        context_of(request), res_type, res_id, count=count, since_us=since_us, cursor=cursor,
        query=request.url.query,
    )
    path = "/".join(p for p in (services.base, res_type, res_id, "_history") if p)
    query = f"_count={count}" + (f"&_since={since}" if since else "")
    links = [("self", f"{path}?{request.url.query}" if request.url.query else path)]
    if page.next_cursor is not None:
        links.append(("next", f"{path}?{query}&_cursor={render.encode_cursor(page.next_cursor)}"))
    entries = [render.history_entry(v, services.base) for v in page.versions]
    return render.fhir(200, render.bundle("history", page.total, links, entries))


def _written(request: Request, version: Version, status: int, base: str) -> Response:
    headers = render.version_headers(version, base)
    prefer = negotiate.prefer_return(request)
    if prefer == "minimal":
        return render.fhir(status, None, headers)
    if prefer == "OperationOutcome":
        message = f"{version.method} of {version.res_type} succeeded"
        return render.fhir(status, canonical_json(information_outcome(message)), headers)
    return render.fhir(status, version.body, headers)


def _not_modified(request: Request, found: Version) -> bool:
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = {tag.strip() for tag in none_match.split(",")}
        return found.etag in tags or f'"{found.version}"' in tags or "*" in tags
    since = negotiate.http_date(request.headers.get("if-modified-since"))
    if since is None:
        return False
    modified = datetime.fromtimestamp(found.ts_us // 1_000_000, tz=UTC)
    return modified <= since


# (path, method, handler, FHIR restful interaction: the AuditEvent subtype when the store is not reached)
routes: list[tuple[str, str, Handler, str]] = [
    ("/fhir/metadata", "GET", capabilities, "capabilities"),
    ("/fhir/_history", "GET", history_system, "history-system"),
    ("/fhir/{res_type}/_history", "GET", history_type, "history-type"),
    ("/fhir/{res_type}/{res_id}/_history", "GET", history_instance, "history-instance"),
    ("/fhir/{res_type}/{res_id}/_history/{version}", "GET", vread, "vread"),
    ("/fhir/{res_type}/{res_id}", "GET", read, "read"),
    ("/fhir/{res_type}/{res_id}", "PUT", update, "update"),
    ("/fhir/{res_type}/{res_id}", "DELETE", delete, "delete"),
    ("/fhir/{res_type}/{res_id}", "PATCH", patch, "patch"),
    ("/fhir/{res_type}", "POST", create, "create"),
    ("/fhir/{res_type}", "PUT", conditional_update, "update"),
    ("/fhir/{res_type}", "DELETE", conditional_delete, "delete"),
]
