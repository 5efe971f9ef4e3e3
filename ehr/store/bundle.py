"""Transaction and batch Bundles (http.html#transaction), the write side: DELETE, POST, PUT, PATCH.

A transaction runs in one database transaction in the spec's order (DELETE, then POST, then PUT and
PATCH): ids are assigned first (conditional creates and updates resolved under their criteria lock),
then every ``reference`` in the bundle's resources that names an entry's fullUrl (``urn:uuid:`` or
an absolute URL) or is a conditional reference (``Patient?identifier=...``, exactly one match) is
rewritten to ``Type/id``, then the writes go in, each with its own AuditEvent in the same
transaction. Any failure rolls everything back. A batch runs each entry on its own.
Reads (GET entries) are the HTTP layer's: it runs them after this returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from ehr.audit.events import Interaction
from ehr.context import AccessContext
from ehr.db.database import Executor
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Search
from ehr.store import ingest, patch, policy, sql
from ehr.store.guard import Guard
from ehr.store.persist import Pending
from ehr.store.records import Version, to_version
from ehr.store.search import criteria_of
from ehr.store.writer import Writer, one_match

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2}
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class Request:
    """One write entry, parsed by the HTTP layer."""

    index: int
    method: str                       # DELETE POST PUT PATCH
    res_type: str
    res_id: str | None = None         # from the URL
    criteria: Search | None = None    # conditional URL (PUT/DELETE Type?query), or If-None-Exist for POST
    query: str | None = None          # the criteria as written, for the audit
    resource: Any = None              # the body (POST/PUT), or the JSON Patch operations (PATCH)
    full_url: str | None = None
    if_match: int | None = None
    assigned: str | None = None       # the id this entry writes, once known
    existing: bool = False            # a conditional create that matched: nothing to write
    access: policy.Access | None = None   # how the caller may write it (compartment)


@dataclass(slots=True)
class Outcome:
    status: int                        # 200 201 204, or the error's status (batch)
    version: Version | None = None
    error: EhrError | None = None


@dataclass(slots=True)
class _Run:
    writer: Writer
    tx: Executor
    ctx: AccessContext
    base: str
    guard: Guard
    references: dict[str, str] = field(default_factory=dict)  # fullUrl -> Type/id
    pending: list[Pending] = field(default_factory=list)       # written together (ehr/store/persist.py)


async def transaction(run: _Run, requests: list[Request]) -> list[Outcome]:
    """All of ``requests`` or nothing; outcomes in the entries' order."""
    _check_count(requests)
    ordered = sorted(requests, key=lambda r: (_ORDER[r.method], r.index))
    outcomes: dict[int, Outcome] = {}
    for request in ordered:
        if request.method == "DELETE":
            outcomes[request.index] = await _entry(request, _delete(run, request))
    await _flush(run)  # deletes land before conditional creates look for matches (R4's order)
    for request in ordered:
        if request.method != "DELETE":
            await _entry(request, _assign(run, request))
    _check_distinct(requests)
    for request in ordered:
        if request.method != "DELETE" and isinstance(request.resource, (dict, list)):
            await _entry(request, _rewrite(run, request.resource))  # a patch's values too
    for request in ordered:
        if request.method != "DELETE":
            outcomes[request.index] = await _entry(request, _write(run, request))
    await _flush(run)
    return [outcomes[r.index] for r in requests]


async def _flush(run: _Run) -> None:
    pending, run.pending = run.pending, []
    await run.writer.flush(run.tx, pending)


def new_run(writer: Writer, tx: Executor, ctx: AccessContext, base: str, guard: Guard) -> _Run:
    return _Run(writer, tx, ctx, base.rstrip("/"), guard)


async def _matches(run: _Run, criteria: Search, *, lock: bool) -> list[str]:
    """A conditional entry's or reference's matches, within what the caller may search."""
    assert criteria.resource_type is not None
    searching = run.guard.access(run.ctx, criteria.resource_type, "s")
    scope = run.guard.scope(criteria.resource_type, searching)
    return await run.writer.matches(run.tx, criteria, lock=lock, scope=scope)


async def _entry(request: Request, step: Awaitable[Any]) -> Any:
    """Run one step of an entry; its failure fails the bundle, naming the entry."""
    try:
        return await step
    except EhrError as err:
        raise EhrError(err.category, f"entry {request.index}: {err.message}", err.details, err.headers) from None


async def _delete(run: _Run, request: Request) -> Outcome:
    access = run.guard.access(run.ctx, request.res_type, "d")
    res_id = request.res_id
    if request.criteria is not None:
        res_id = one_match(await _matches(run, request.criteria, lock=True), "conditional delete")
    if res_id is None:
        return Outcome(204)
    await run.guard.visible_or_absent(run.tx, access, request.res_type, res_id)
    request.assigned = res_id
    event = Interaction("delete", request.res_type, res_id, query=request.query)
    tombstone = await run.writer.delete(run.tx, run.ctx, event, res_id, request.if_match, run.pending)
    return Outcome(204, tombstone)


async def _assign(run: _Run, request: Request) -> None:
    """The id each POST/PUT/PATCH entry writes; conditional ones resolved now, under their lock."""
    kind = {"POST": "c", "PUT": "u", "PATCH": "u"}[request.method]
    request.access = run.guard.access(run.ctx, request.res_type, kind)
    found: str | None = None
    if request.criteria is not None:
        what = "If-None-Exist" if request.method == "POST" else f"conditional {request.method.lower()}"
        found = one_match(await _matches(run, request.criteria, lock=True), what)
    if request.method == "POST":
        request.existing = found is not None
        request.assigned = found or str(uuid.uuid4())
    elif request.method == "PATCH":
        request.assigned = request.res_id or found
        if request.assigned is None:
            raise EhrError(Category.NOT_FOUND, "no resource matches the patch")
    else:
        body_id = request.resource.get("id") if isinstance(request.resource, dict) else None
        if found is not None and body_id is not None and body_id != found:
            raise EhrError(Category.INVALID, "the body's id is not the id of the matching resource")
        request.assigned = request.res_id or found or body_id or str(uuid.uuid4())
    if request.full_url:
        run.references[request.full_url] = f"{request.res_type}/{request.assigned}"


def _check_distinct(requests: list[Request]) -> None:
    """R4: a transaction may not touch one resource twice."""
    seen: set[tuple[str, str]] = set()
    for request in requests:
        if request.assigned is None or request.existing:
            continue
        key = (request.res_type, request.assigned)
        if key in seen:
            raise EhrError(Category.INVALID, f"entry {request.index}: a second entry for the same resource")
        seen.add(key)


async def _rewrite(run: _Run, value: Any) -> None:
    """Rewrite, in place, every reference to an entry of the bundle or a conditional reference."""
    if isinstance(value, list):
        for item in value:
            await _rewrite(run, item)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        if key == "reference" and isinstance(item, str):
            value[key] = await _target(run, item)
        elif isinstance(item, (dict, list)):
            await _rewrite(run, item)


async def _target(run: _Run, reference: str) -> str:
    if reference in run.references:
        return run.references[reference]
    if reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
        raise EhrError(Category.INVALID, "a reference names no entry of the bundle")
    res_type, mark, query = reference.partition("?")
    if not mark or "/" in res_type or ":" in res_type:
        return reference
    criteria = criteria_of(res_type, query, run.base, "a conditional reference")
    found = await _matches(run, criteria, lock=False)
    if len(found) != 1:
        raise EhrError(Category.PRECONDITION_FAILED, "a conditional reference does not match exactly one resource")
    return f"{res_type}/{found[0]}"


async def _write(run: _Run, request: Request) -> Outcome:
    assert request.assigned is not None and request.access is not None
    access = request.access
    if request.method == "PATCH":
        await run.guard.visible_or_absent(run.tx, access, request.res_type, request.assigned)
        event = Interaction("patch", request.res_type, request.assigned)
        operations = patch.check(request.resource)
        patched = await run.writer.patch(
            run.tx, run.ctx, event, request.assigned, operations, request.if_match, run.pending,
            check=lambda body: Guard.content(access, body),
        )
        return Outcome(200, patched)
    if request.existing:  # a conditional create that matched: the existing resource, as it is
        row = await run.tx.fetch_one(sql.NEWEST, request.res_type, request.assigned)
        assert row is not None
        return Outcome(200, to_version(run.writer.keys, row))
    resource = {**request.resource, "id": request.assigned} if isinstance(request.resource, dict) else request.resource
    ingest.check_resource(resource, request.res_type, request.assigned)
    Guard.content(access, resource)  # after the references were rewritten: they decide the compartment
    if request.method == "PUT":
        await run.guard.visible_or_absent(run.tx, access, request.res_type, request.assigned)
    if request.method == "POST":
        event = Interaction("create", request.res_type, query=request.query)
        return Outcome(201, await run.writer.create(run.tx, run.ctx, event, request.assigned, resource, run.pending))
    ingest.check_id(request.assigned)
    event = Interaction("update", request.res_type, request.assigned, query=request.query)
    result = await run.writer.update(
        run.tx, run.ctx, event, request.assigned, resource, request.if_match, run.pending,
        on_create=lambda: _may_create(run, request.res_type),
    )
    return Outcome(201 if result.created else 200, result.version)


def _may_create(run: _Run, res_type: str) -> None:
    run.guard.access(run.ctx, res_type, "c")


def _check_count(requests: list[Request]) -> None:
    if len(requests) > MAX_ENTRIES:
        raise EhrError(Category.TOO_LARGE, f"a bundle may hold at most {MAX_ENTRIES} entries")
