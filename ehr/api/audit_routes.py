"""Reviewing the audit log over FHIR: AuditEvent search and read, ``Patient/{id}/$access-log``, and a
405 for every way of changing an AuditEvent (and for its history, which it does not have).

Each handler parses, calls ehr/audit/review.py once, renders. Mounted before the generic routes, so
no request about AuditEvent reaches the resource store."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import Response

from ehr.api import negotiate, render
from ehr.api.router import Handler
from ehr.api.scope import context_of, services_of
from ehr.api.services import Services
from ehr.audit.review import AuditPage, AuditReview, StoredEvent
from ehr.audit.search_params import Paging, encode_cursor
from ehr.crypto.canonical import canonical_json


def review_of(services: Services) -> AuditReview:
    """The services' AuditReview; built on the spot (it only holds references) until they have one."""
    review: AuditReview | None = getattr(services, "audit_review", None)
    if review is None:
        paging = Paging(services.settings.page_size_default, services.settings.page_size_max)
        review = AuditReview(services.db, services.keys, services.audit, paging=paging)
    return review


async def search(request: Request) -> Response:
    negotiate.check_accept(request)
    services = services_of(request)
    page = await review_of(services).search(
        context_of(request), request.query_params.multi_items(), lenient=negotiate.lenient(request),
        query=_query(request),
    )
    return _searchset(page, f"{services.base}/AuditEvent", services.base)


async def read(request: Request) -> Response:
    negotiate.check_accept(request)
    event = await review_of(services_of(request)).read(context_of(request), request.path_params["res_id"])
    return render.fhir(200, event.body)


async def access_log(request: Request) -> Response:
    negotiate.check_accept(request)
    services = services_of(request)
    patient = request.path_params["res_id"]
    page = await review_of(services).access_log(
        context_of(request), patient, request.query_params.multi_items(), lenient=negotiate.lenient(request),
        query=_query(request),
    )
    return _searchset(page, f"{services.base}/Patient/{quote(patient, safe='')}/$access-log", services.base)


async def refuse(request: Request) -> Response:
    code: str = request.scope["ehr.interaction"]
    await review_of(services_of(request)).refuse(context_of(request), code, request.path_params.get("res_id"))


def _searchset(page: AuditPage, url: str, base: str) -> Response:
    applied = [*page.query.applied, ("_count", str(page.query.count))]
    here = applied + ([("_cursor", encode_cursor(page.query.after))] if page.query.after else [])
    links = [("self", f"{url}?{urlencode(here)}")]
    if page.next_cursor is not None:
        links.append(("next", f"{url}?{urlencode([*applied, ('_cursor', page.next_cursor)])}"))
    entries = [_entry(event, base) for event in page.events]
    return render.fhir(200, render.bundle("searchset", page.total, links, entries))


def _entry(event: StoredEvent, base: str) -> bytes:
    head = canonical_json({"fullUrl": f"{base}/AuditEvent/{event.id}", "search": {"mode": "match"}})
    return head[:-1] + b',"resource":' + event.body + b"}"  # the sealed bytes, as they are


def _query(request: Request) -> str | None:
    return request.url.query or None




# (path, method, handler, FHIR interaction: the AuditEvent subtype when the review is not reached)
audit_routes: list[tuple[str, str, Handler, str]] = [
    ("/fhir/AuditEvent", "GET", search, "search-type"),
    ("/fhir/AuditEvent/{res_id}", "GET", read, "read"),
    ("/fhir/Patient/{res_id}/$access-log", "GET", access_log, "operation"),
    ("/fhir/AuditEvent", "POST", refuse, "create"),
    ("/fhir/AuditEvent/{res_id}", "PUT", refuse, "update"),
    ("/fhir/AuditEvent/{res_id}", "PATCH", refuse, "patch"),
    ("/fhir/AuditEvent/{res_id}", "DELETE", refuse, "delete"),
    ("/fhir/AuditEvent/_history", "GET", refuse, "history-type"),
    ("/fhir/AuditEvent/{res_id}/_history", "GET", refuse, "history-instance"),
    ("/fhir/AuditEvent/{res_id}/_history/{version}", "GET", refuse, "vread"),
]
