"""``POST [base]`` with a transaction or batch Bundle (http.html#transaction): parse the entries,
hand the writes to the store in one call, then run the reads (GET entries, after the writes as R4
orders them) and answer with a transaction-response or batch-response Bundle in entry order."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from ehr.api import negotiate, render
from ehr.api.router import Handler
from ehr.api.scope import context_of, services_of
from ehr.api.search_routes import searchset
from ehr.api.services import Services
from ehr.context import AccessContext
from ehr.crypto.canonical import canonical_json
from ehr.errors import Category, EhrError, operation_outcome
from ehr.store.bundle import Outcome
from ehr.store.bundle import Request as Write
from ehr.store.bundle_entries import Read, parse_entry
from ehr.store.records import Version

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_JSON_PATCH = "application/json-patch+json"


async def process(request: Request) -> Response:
    negotiate.check_accept(request)
    services = services_of(request)
    bundle = await negotiate.read_resource(request, services.settings.max_bundle_bytes)
    kind = bundle.get("type") if isinstance(bundle, dict) and bundle.get("resourceType") == "Bundle" else None
    if kind not in ("transaction", "batch"):
        raise EhrError(Category.INVALID, "POST to the base takes a Bundle of type transaction or batch")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EhrError(Category.STRUCTURE, "Bundle.entry must be a list of entries")
    ctx = context_of(request)
    parsed = [_parse(services, n, entry, kind == "batch") for n, entry in enumerate(entries)]
    writes = [p for p in parsed if isinstance(p, Write)]
    store = services.store
    outcomes = await (store.transaction(ctx, writes) if kind == "transaction" else store.batch(ctx, writes))
    by_index = {w.index: o for w, o in zip(writes, outcomes, strict=True)}
    answers: list[bytes] = []
    for n, item in enumerate(parsed):
        if isinstance(item, Write):
            answers.append(_written(services.base, by_index[n]))
        elif isinstance(item, EhrError):
            answers.append(_failed(item))
        else:
            answers.append(await _read(services, ctx, item))
    return render.fhir(200, render.bundle(f"{kind}-response", None, [], answers))


def _parse(services: Services, index: int, entry: dict[str, Any], batch: bool) -> Write | Read | EhrError:
    """A write, a read (method, url), or (in a batch) the entry's own error."""
    try:
        return parse_entry(services.base, index, entry)
    except EhrError as err:
        if batch:
            return err
        raise EhrError(err.category, f"entry {index}: {err.message}") from None


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _written(base: str, outcome: Outcome) -> bytes:
    if outcome.error is not None:
        return _failed(outcome.error)
    response: dict[str, Any] = {"status": _status(outcome.status)}
    version = outcome.version
    if version is None:
        return canonical_json({"response": response})
    response["etag"] = version.etag
    if not version.deleted:
        response["location"] = f"{version.res_type}/{version.res_id}/_history/{version.version}"
        response["lastModified"] = version.last_updated
    return _with_resource({"fullUrl": f"{base}/{version.res_type}/{version.res_id}", "response": response}, version)


def _with_resource(head: dict[str, Any], version: Version) -> bytes:
    encoded = canonical_json(head)
    if version.body is None:
        return encoded
    return encoded[:-1] + b',"resource":' + version.body + b"}"


def _failed(err: EhrError) -> bytes:
    return canonical_json({"response": {"status": _status(err.category.status), "outcome": operation_outcome(err)}})


async def _read(services: Services, ctx: AccessContext, item: Read) -> bytes:
    """A GET entry: read, vread or search, run after the writes (R4's order); a failure is its answer."""
    try:
        parts, query = item
        if len(parts) in (2, 4):
            found = await (services.store.read(ctx, parts[0], parts[1]) if len(parts) == 2
                           else services.store.vread(ctx, parts[0], parts[1], int(parts[3])))
            head = {"fullUrl": f"{services.base}/{parts[0]}/{parts[1]}",
                    "response": {"status": "200 OK", "etag": found.etag, "lastModified": found.last_updated}}
            return _with_resource(head, found)
        pairs = parse_qsl(query, keep_blank_values=True)
        body = await searchset(services, ctx, parts[0], pairs, f"{services.base}/{parts[0]}", lenient=False)
        return canonical_json({"response": {"status": "200 OK"}})[:-1] + b',"resource":' + body + b"}"
    except EhrError as err:  # the writes are committed by now: a read's failure is its entry's answer
        return _failed(err)


bundle_routes: list[tuple[str, str, Handler, str]] = [("/fhir", "POST", process, "batch")]
