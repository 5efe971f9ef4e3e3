"""FHIR search over HTTP (search.html): type and system level, by GET and by POST ``_search`` (form
body), Patient compartment search and ``Patient/{id}/$everything``. Parse, one store call, render."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from ehr.api import negotiate, render, summary
from ehr.api.router import Handler
from ehr.api.scope import context_of, services_of
from ehr.api.services import Services
from ehr.context import AccessContext
from ehr.crypto.canonical import canonical_json
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Search
from ehr.fhir.search.query import parse
from ehr.store.records import Version
from ehr.store.search import SEARCHABLE, Page, supported_params

_FORM = "application/x-www-form-urlencoded"



async def search_type(request: Request) -> Response:
    return await _search(request, request.path_params["res_type"], None)


async def search_system(request: Request) -> Response:
    return await _search(request, None, None)


async def search_compartment(request: Request) -> Response:
    """``GET Patient/{id}/{type}``: the type's resources in that patient's compartment."""
    return await _search(request, request.path_params["comp_type"], request.path_params["res_id"])


async def everything(request: Request) -> Response:
    """``Patient/{id}/$everything``: every resource in the patient's compartment, the Patient included."""
    return await _search(request, None, request.path_params["res_id"])


async def _search(request: Request, res_type: str | None, patient: str | None) -> Response:
    negotiate.check_accept(request)
    services = services_of(request)
    pairs = await _parameters(request, services.settings.max_body_bytes)
    url = _url(services.base, res_type, patient)
    body = await searchset(
        services, context_of(request), res_type, pairs, url, lenient=negotiate.lenient(request), patient=patient
    )
    return render.fhir(200, body)


async def searchset(
    services: Services, ctx: AccessContext, res_type: str | None, pairs: list[tuple[str, str]], url: str,
    *, lenient: bool, patient: str | None = None,
) -> bytes:
    """One page of a search as a searchset Bundle (also a GET entry of a transaction or batch)."""
    settings = services.settings
    if res_type is not None and res_type not in SEARCHABLE:
        raise EhrError(Category.NOT_FOUND, "unknown resource type")
    search = parse(
        res_type, pairs, supported_params, base=services.base, strict=not lenient,
        max_count=settings.page_size_max, resource_types=SEARCHABLE,
    )
    page, matches, included = await services.store.search(ctx, search, query=urlencode(pairs), patient=patient)
    kept = [(k, v) for k, v in pairs if k != "_cursor"]
    links = [("self", f"{url}?{urlencode(pairs)}" if pairs else url)]
    for relation, cursor in (("next", page.next_cursor), ("previous", page.previous_cursor)):
        if cursor is not None:
            links.append((relation, f"{url}?{urlencode([*kept, ('_cursor', cursor)])}"))
    entries = [_entry(v, services.base, "match", search) for v in matches]
    entries += [_entry(v, services.base, "include", search) for v in included]
    if search.ignored:
        entries.append(_ignored(search))
    return render.bundle("searchset", _total(page, search), links, entries)


async def _parameters(request: Request, limit: int) -> list[tuple[str, str]]:
    """The query's pairs; for POST ``_search`` the form body's pairs after them (search.html#search)."""
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != _FORM:
            raise EhrError(Category.UNSUPPORTED_MEDIA, f"_search takes a {_FORM} body")
        body = await negotiate.read_body(request, limit)
        try:
            pairs += parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise EhrError(Category.INVALID, "the form body is not UTF-8") from None
    return pairs


def _url(base: str, res_type: str | None, patient: str | None) -> str:
    if patient is None:
        return f"{base}/{res_type}" if res_type else base
    tail = res_type if res_type is not None else "$everything"
    return f"{base}/Patient/{quote(patient, safe='')}/{tail}"


def _total(page: Page, search: Search) -> int | None:
    return page.total if search.total != "none" else None


def _entry(version: Version, base: str, mode: str, search: Search) -> bytes:
    assert version.body is not None
    head = canonical_json(
        {"fullUrl": f"{base}/{version.res_type}/{version.res_id}", "search": {"mode": mode}}
    )
    body = summary.apply(version.body, search) if mode == "match" else version.body
    return head[:-1] + b',"resource":' + body + b"}"


def _ignored(search: Search) -> bytes:
    names = ", ".join(name[:64] for name in search.ignored[:20])
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": f"parameters ignored: {names}"}],
    }
    return canonical_json({"resource": outcome, "search": {"mode": "outcome"}})


search_routes: list[tuple[str, str, Handler, str]] = [
    ("/fhir", "GET", search_system, "search-system"),
    ("/fhir/_search", "POST", search_system, "search-system"),
    ("/fhir/{res_type}", "GET", search_type, "search-type"),
    ("/fhir/{res_type}/_search", "POST", search_type, "search-type"),
    ("/fhir/Patient/{res_id}/$everything", "GET", everything, "operation"),
    ("/fhir/Patient/{res_id}/{comp_type}", "GET", search_compartment, "search-type"),
]
