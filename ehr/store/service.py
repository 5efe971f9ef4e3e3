"""The store: the one door to ePHI. Every way in (HTTP, HL7 v2, import, CLI) calls these methods
with an AccessContext; each method authorizes, validates, versions, signs, encrypts and persists in
one transaction, and leaves exactly one AuditEvent per call, whatever the outcome (a write's event
commits with its data). Built once per process; holds no request state.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.crypto.blind import BlindIndex
from ehr.crypto.keys import KeyStore
from ehr.db.database import Conflict, Database
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Search
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store import bundle, index, ingest, patch, policy, sql
from ehr.store.records import Version, to_version
from ehr.store.search import Page, Runner, Scope
from ehr.store.writer import Clock, Writer, WriteResult, one_match

__all__ = ["Clock", "HistoryPage", "Store", "SystemClock", "WriteResult"]

_WRITE_ATTEMPTS = 3
_SUBTYPES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
Cursor = tuple[int, str, str, int]


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[Version]
    total: int
    next_cursor: Cursor | None


class Store:
    def __init__(
        self,
        db: Database,
        keys: KeyStore,
        audit: AuditLog,
        clock: Clock | None = None,
        *,
        base: str,
        page_size: int = 50,
    ) -> None:
        """``base`` is this server's FHIR base URL (references to it are local); ``page_size`` the
        default number of search matches per page."""
        self._db = db
        self._keys = keys
        self._audit = audit
        self._clock = clock or SystemClock()
        self.indexer = index.Indexer(BlindIndex(keys.index_key()), base)
        self._writer = Writer(db, keys, audit, self._clock, self.indexer)
        self._page_size = page_size

    # -- reads -------------------------------------------------------------------------------

    async def read(self, ctx: AccessContext, res_type: str, res_id: str) -> Version:
        """The current version; GONE when its newest version is a delete."""
        async with self._audit.audited(ctx, Interaction("read", res_type, res_id)) as event:
            self._authorize(ctx, res_type, "r")
            row = await self._db.fetch_one(sql.NEWEST, res_type, res_id)
            if row is None:
                raise EhrError(Category.NOT_FOUND, f"{res_type} not found")
            found = to_version(self._keys, row)
            event.version, event.patient = found.version, row["compartment"]
            if found.deleted:
                raise EhrError(Category.GONE, f"{res_type} was deleted", headers={"ETag": found.etag})
            return found

    async def vread(self, ctx: AccessContext, res_type: str, res_id: str, version: int) -> Version:
        async with self._audit.audited(ctx, Interaction("vread", res_type, res_id, version)) as event:
            self._authorize(ctx, res_type, "r")
            row = await self._db.fetch_one(sql.VERSION, res_type, res_id, version)
            if row is None:
                raise EhrError(Category.NOT_FOUND, f"{res_type} version not found")
            event.patient = row["compartment"]
            found = to_version(self._keys, row)
            if found.deleted:
                raise EhrError(Category.GONE, f"this version of the {res_type} is a delete")
            return found

    async def history(
        self,
        ctx: AccessContext,
        res_type: str | None = None,
        res_id: str | None = None,
        *,
        count: int,
        since_us: int | None = None,
        cursor: Cursor | None = None,
        query: str | None = None,
    ) -> HistoryPage:
        """Versions newest first, in pages of ``count``, keyset-paged so that writes during paging
        neither repeat nor skip an entry. ``query`` is the request's parameters, for the audit."""
        level = "history-system" if res_type is None else "history-type" if res_id is None else "history-instance"
        async with self._audit.audited(ctx, Interaction(level, res_type, res_id, query=query)) as event:
            return await self._history(ctx, event, res_type, res_id, count, since_us, cursor)

    async def _history(
        self,
        ctx: AccessContext,
        event: Interaction,
        res_type: str | None,
        res_id: str | None,
        count: int,
        since_us: int | None,
        cursor: Cursor | None,
    ) -> HistoryPage:
        where, args = self._history_filter(ctx, res_type, res_id, since_us)
        if res_id is not None and res_type is not None:
            newest = await self._db.fetch_one(sql.NEWEST, res_type, res_id)
            if newest is None:
                raise EhrError(Category.NOT_FOUND, f"{res_type} not found")
            event.patient = newest["compartment"]
        total_row = await self._db.fetch_one(f"SELECT count(*) AS n FROM resource_version{_where(where)}", *args)
        page_where, page_args = list(where), list(args)
        if cursor is not None:
            marks = ", ".join(f"${n}" for n in range(len(args) + 1, len(args) + 5))
            page_where.append(sql.CURSOR_BEFORE.format(marks))
            page_args += list(cursor)
        limit = f" LIMIT {count + 1:d}"
        rows = await self._db.fetch_all(
            f"SELECT * FROM resource_version{_where(page_where)}{sql.HISTORY_ORDER}{limit}", *page_args
        )
        versions = [to_version(self._keys, row) for row in rows[:count]]
        last = versions[-1] if versions and len(rows) > count else None
        next_cursor = (last.ts_us, last.res_type, last.res_id, last.version) if last else None
        return HistoryPage(versions, int(total_row["n"]) if total_row else 0, next_cursor)

    async def search(
        self, ctx: AccessContext, search: Search, *, query: str, patient: str | None = None
    ) -> tuple[Page, list[Version], list[Version]]:
        """One page of a search: the page (total, cursors), its matches and its included resources,
        decrypted. ``patient`` confines matches and includes to that patient's compartment."""
        level = "search-system" if search.resource_type is None else "search-type"
        what = Interaction(level, search.resource_type, query=query, patient=patient)
        async with self._audit.audited(ctx, what):
            readable = policy.readable_types(ctx)
            if search.resource_type is not None:
                self._authorize(ctx, search.resource_type, "s")
                types: tuple[str, ...] = (search.resource_type,)
            else:
                types = tuple(sorted(readable if readable is not None else RESOURCE_TYPES))
            await self._writer.statistics.refresh_if_grown()
            runner = Runner(self._db.searching(), self._writer.compiler, self._page_size)
            page = await runner.page(search, Scope(types or ("",), readable, patient))
            matches = [to_version(self._keys, row) for row in page.matches]
            included = [to_version(self._keys, row) for row in page.included]
            return page, matches, included

    # -- writes ------------------------------------------------------------------------------

    async def create(self, ctx: AccessContext, res_type: str, resource: Any) -> Version:
        """Create with a server-assigned id (any id in the body is ignored, as R4 says)."""
        async with self._audit.audited(ctx, Interaction("create", res_type)) as event:
            self._authorize(ctx, res_type, "c")
            ingest.check_resource(resource, res_type, None)
            return await self._writer.create(self._db, ctx, event, str(uuid.uuid4()), resource)

    async def conditional_create(
        self, ctx: AccessContext, res_type: str, resource: Any, criteria: Search, *, query: str
    ) -> WriteResult:
        """``If-None-Exist``: create unless a resource matches; one match is returned as it is,
        several are a 412. Racing conditional creates with the same criteria make one resource."""
        async with self._audit.audited(ctx, Interaction("create", res_type, query=query)) as event:
            self._authorize(ctx, res_type, "c")
            self._authorize(ctx, res_type, "s")
            ingest.check_resource(resource, res_type, None)
            async with self._db.transaction() as tx:
                found = one_match(await self._writer.matches(tx, criteria, lock=True), "If-None-Exist")
                if found is None:
                    created = await self._writer.create(tx, ctx, event, str(uuid.uuid4()), resource)
                    return WriteResult(created, created=True)
                row = await tx.fetch_one(sql.NEWEST, res_type, found)
            assert row is not None
            event.resource_id, event.patient = found, row["compartment"]
            return WriteResult(to_version(self._keys, row), created=False)

    async def update(
        self, ctx: AccessContext, res_type: str, res_id: str, resource: Any, if_match: int | None = None
    ) -> WriteResult:
        """Update, or create with the client's id when there is none (create needs the 'c' grant too)."""
        async with self._audit.audited(ctx, Interaction("update", res_type, res_id)) as event:
            self._authorize(ctx, res_type, "u")
            ingest.check_id(res_id)
            ingest.check_resource(resource, res_type, res_id)
            for _attempt in range(_WRITE_ATTEMPTS):
                try:
                    async with self._db.transaction() as tx:
                        return await self._writer.update(
                            tx, ctx, event, res_id, resource, if_match,
                            on_create=lambda: self._authorize(ctx, res_type, "c"),
                        )
                except Conflict:  # a racing create-on-update inserted the same id first: retry as an update
                    event.committed = False
            raise EhrError(Category.CONFLICT, "concurrent writes to this resource; try again")

    async def conditional_update(
        self, ctx: AccessContext, res_type: str, criteria: Search, resource: Any, *, query: str,
        if_match: int | None = None,
    ) -> WriteResult:
        """``PUT Type?criteria``: no match creates (under the body's id, or a new one), one match is
        updated (a body id must be that one's), several are a 412."""
        async with self._audit.audited(ctx, Interaction("update", res_type, query=query)) as event:
            self._authorize(ctx, res_type, "u")
            self._authorize(ctx, res_type, "s")
            async with self._db.transaction() as tx:
                found = one_match(await self._writer.matches(tx, criteria, lock=True), "conditional update")
                body_id = resource.get("id") if isinstance(resource, dict) else None
                if found is not None and body_id is not None and body_id != found:
                    raise EhrError(Category.INVALID, "the body's id is not the id of the matching resource")
                res_id = found or body_id or str(uuid.uuid4())
                if found is None:
                    self._authorize(ctx, res_type, "c")
                ingest.check_id(res_id)
                ingest.check_resource({**resource, "id": res_id}, res_type, res_id)
                return await self._writer.update(tx, ctx, event, res_id, {**resource, "id": res_id}, if_match)

    async def patch(
        self, ctx: AccessContext, res_type: str, res_id: str, operations: Any, if_match: int | None = None
    ) -> Version:
        """JSON Patch of the current version (ehr/store/patch.py), written as an update."""
        async with self._audit.audited(ctx, Interaction("patch", res_type, res_id)) as event:
            self._authorize(ctx, res_type, "u")
            checked = patch.check(operations)
            async with self._db.transaction() as tx:
                return await self._writer.patch(tx, ctx, event, res_id, checked, if_match)

    async def delete(
        self, ctx: AccessContext, res_type: str, res_id: str, if_match: int | None = None
    ) -> Version | None:
        """Write a tombstone version. Deleting what does not exist, or is already deleted, writes nothing."""
        async with self._audit.audited(ctx, Interaction("delete", res_type, res_id)) as event:
            self._authorize(ctx, res_type, "d")
            async with self._db.transaction() as tx:
                return await self._writer.delete(tx, ctx, event, res_id, if_match)

    async def conditional_delete(
        self, ctx: AccessContext, res_type: str, criteria: Search, *, query: str
    ) -> Version | None:
        """``DELETE Type?criteria``: one match is deleted, none deletes nothing, several are a 412."""
        async with self._audit.audited(ctx, Interaction("delete", res_type, query=query)) as event:
            self._authorize(ctx, res_type, "d")
            self._authorize(ctx, res_type, "s")
            async with self._db.transaction() as tx:
                found = one_match(await self._writer.matches(tx, criteria, lock=True), "conditional delete")
                if found is None:
                    return None
                return await self._writer.delete(tx, ctx, event, found, None)

    # -- bundles -----------------------------------------------------------------------------

    async def transaction(self, ctx: AccessContext, requests: list[bundle.Request]) -> list[bundle.Outcome]:
        """The write entries of a transaction Bundle, all or nothing (ehr/store/bundle.py). One
        AuditEvent per entry and one for the bundle, committed with the data."""
        async with self._audit.audited(ctx, Interaction("transaction")) as event:
            async with self._db.transaction() as tx:
                run = bundle.new_run(self._writer, tx, ctx, self.indexer.base, self._authorize)
                outcomes = await bundle.transaction(run, requests)
                await tx.execute_all(self._audit.prepare(ctx, event).statements)
                event.committed = True
        return outcomes

    async def batch(self, ctx: AccessContext, requests: list[bundle.Request]) -> list[bundle.Outcome]:
        """The write entries of a batch Bundle, each on its own: a failing entry gets its error."""
        async with self._audit.audited(ctx, Interaction("batch")):
            return [await self._batch_entry(ctx, request) for request in requests]

    async def _batch_entry(self, ctx: AccessContext, request: bundle.Request) -> bundle.Outcome:
        try:
            async with self._db.transaction() as tx:
                run = bundle.new_run(self._writer, tx, ctx, self.indexer.base, self._authorize)
                (outcome,) = await bundle.transaction(run, [request])
            return outcome
        except EhrError as err:
            what = Interaction(_SUBTYPES[request.method], request.res_type, request.res_id, query=request.query)
            what.failed(err.category, err.message)
            await self._audit.record(ctx, what)
            return bundle.Outcome(err.category.status, error=err)

    # -- internals ---------------------------------------------------------------------------

    def _authorize(self, ctx: AccessContext, res_type: str, letter: Any) -> None:
        ingest.check_type(res_type)
        policy.require(ctx, res_type, letter)

    def _history_filter(
        self, ctx: AccessContext, res_type: str | None, res_id: str | None, since_us: int | None
    ) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []

        def add(clause: str, *values: Any) -> None:
            marks = [f"${len(args) + n}" for n in range(1, len(values) + 1)]
            where.append(clause.format(*marks))
            args.extend(values)

        if res_type is not None:
            self._authorize(ctx, res_type, "r")
            if res_id is None:
                self._authorize(ctx, res_type, "s")
            add("res_type = {}", res_type)
        else:
            allowed = policy.readable_types(ctx)
            if allowed is not None:
                types = sorted(allowed) or [""]  # nothing readable: match no row
                add("res_type IN (" + ", ".join("{}" for _ in types) + ")", *types)
        if res_id is not None:
            add("res_id = {}", res_id)
        if since_us is not None:
            add("ts_us >= {}", since_us)
        return where, args


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""

