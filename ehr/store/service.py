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
from ehr.db.database import Conflict, Database, Executor
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Search
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store import bundle, index, ingest, patch, policy, sql
from ehr.store.guard import Guard
from ehr.store.records import Version, to_version
from ehr.store.search import Page, Runner, Scope, confinement
from ehr.store.writer import Clock, Writer, WriteResult, one_match

__all__ = ["Clock", "HistoryPage", "Receipt", "Store", "SystemClock", "WriteResult"]

_WRITE_ATTEMPTS = 3
_SUBTYPES = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
Cursor = tuple[int, str, str, int]


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Receipt:
    """An idempotency key and the reply to send again when the key comes back (an HL7 ACK)."""

    key: str
    reply: bytes


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
        self._guard = Guard(self._writer.compiler, base)

    # -- reads -------------------------------------------------------------------------------

    async def read(self, ctx: AccessContext, res_type: str, res_id: str) -> Version:
        """The current version; GONE when its newest version is a delete."""
        async with self._audit.audited(ctx, Interaction("read", res_type, res_id)) as event:
            access = self._access(ctx, res_type, "r")
            row = await self._db.fetch_one(sql.NEWEST, res_type, res_id)
            if row is None or not await self._visible(self._db, access, res_type, res_id):
                raise EhrError(Category.NOT_FOUND, f"{res_type} not found")
            found = to_version(self._keys, row)
            event.version, event.patient = found.version, row["compartment"]
            if found.deleted:
                raise EhrError(Category.GONE, f"{res_type} was deleted", headers={"ETag": found.etag})
            return found

    async def vread(self, ctx: AccessContext, res_type: str, res_id: str, version: int) -> Version:
        async with self._audit.audited(ctx, Interaction("vread", res_type, res_id, version)) as event:
            access = self._access(ctx, res_type, "r")
            row = await self._db.fetch_one(sql.VERSION, res_type, res_id, version)
            if row is None or not await self._visible(self._db, access, res_type, res_id):
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
        where, args, access = self._history_filter(ctx, res_type, res_id, since_us)
        if res_id is not None and res_type is not None:
            newest = await self._db.fetch_one(sql.NEWEST, res_type, res_id)
            if newest is None or not await self._visible(self._db, access, res_type, res_id):
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
        async with self._audit.audited(ctx, what) as event:
            scope = self._search_scope(ctx, search.resource_type, patient)
            event.patient = scope.patient  # a search confined to a compartment is on that patient's record
            await self._writer.statistics.refresh_if_grown()
            runner = Runner(self._db.searching(), self._writer.compiler, self._page_size)
            page = await runner.page(search, scope)
            matches = [to_version(self._keys, row) for row in page.matches]
            included = [to_version(self._keys, row) for row in page.included]
            return page, matches, included

    # -- writes ------------------------------------------------------------------------------

    async def create(self, ctx: AccessContext, res_type: str, resource: Any) -> Version:
        """Create with a server-assigned id (any id in the body is ignored, as R4 says)."""
        async with self._audit.audited(ctx, Interaction("create", res_type)) as event:
            access = self._access(ctx, res_type, "c")
            ingest.check_resource(resource, res_type, None)
            res_id = str(uuid.uuid4())
            Guard.content(access, {**resource, "id": res_id})
            return await self._writer.create(self._db, ctx, event, res_id, resource)

    async def conditional_create(
        self, ctx: AccessContext, res_type: str, resource: Any, criteria: Search, *, query: str
    ) -> WriteResult:
        """``If-None-Exist``: create unless a resource matches; one match is returned as it is,
        several are a 412. Racing conditional creates with the same criteria make one resource."""
        async with self._audit.audited(ctx, Interaction("create", res_type, query=query)) as event:
            access = self._access(ctx, res_type, "c")
            within = self._scope(res_type, self._access(ctx, res_type, "s"))
            ingest.check_resource(resource, res_type, None)
            async with self._db.transaction() as tx:
                found = one_match(await self._writer.matches(tx, criteria, lock=True, scope=within), "If-None-Exist")
                if found is None:
                    res_id = str(uuid.uuid4())
                    Guard.content(access, {**resource, "id": res_id})
                    created = await self._writer.create(tx, ctx, event, res_id, resource)
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
            access = self._access(ctx, res_type, "u")
            ingest.check_id(res_id)
            ingest.check_resource(resource, res_type, res_id)
            Guard.content(access, resource)
            for _attempt in range(_WRITE_ATTEMPTS):
                try:
                    async with self._db.transaction() as tx:
                        await self._visible_or_absent(tx, access, res_type, res_id)
                        return await self._writer.update(
                            tx, ctx, event, res_id, resource, if_match,
                            on_create=lambda: self._authorize_create(ctx, res_type),
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
            access = self._access(ctx, res_type, "u")
            within = self._scope(res_type, self._access(ctx, res_type, "s"))
            async with self._db.transaction() as tx:
                found = one_match(
                    await self._writer.matches(tx, criteria, lock=True, scope=within), "conditional update"
                )
                body_id = resource.get("id") if isinstance(resource, dict) else None
                if found is not None and body_id is not None and body_id != found:
                    raise EhrError(Category.INVALID, "the body's id is not the id of the matching resource")
                res_id = found or body_id or str(uuid.uuid4())
                if found is None:
                    self._access(ctx, res_type, "c")
                ingest.check_id(res_id)
                body = {**resource, "id": res_id}
                ingest.check_resource(body, res_type, res_id)
                Guard.content(access, body)
                await self._visible_or_absent(tx, access, res_type, res_id)
                return await self._writer.update(tx, ctx, event, res_id, body, if_match)

    async def patch(
        self, ctx: AccessContext, res_type: str, res_id: str, operations: Any, if_match: int | None = None
    ) -> Version:
        """JSON Patch of the current version (ehr/store/patch.py), written as an update."""
        async with self._audit.audited(ctx, Interaction("patch", res_type, res_id)) as event:
            access = self._access(ctx, res_type, "u")
            checked = patch.check(operations)
            async with self._db.transaction() as tx:
                await self._visible_or_absent(tx, access, res_type, res_id)
                return await self._writer.patch(
                    tx, ctx, event, res_id, checked, if_match, check=lambda body: Guard.content(access, body)
                )

    async def delete(
        self, ctx: AccessContext, res_type: str, res_id: str, if_match: int | None = None
    ) -> Version | None:
        """Write a tombstone version. Deleting what does not exist, or is already deleted, writes nothing."""
        async with self._audit.audited(ctx, Interaction("delete", res_type, res_id)) as event:
            access = self._access(ctx, res_type, "d")
            async with self._db.transaction() as tx:
                await self._visible_or_absent(tx, access, res_type, res_id)
                return await self._writer.delete(tx, ctx, event, res_id, if_match)

    async def conditional_delete(
        self, ctx: AccessContext, res_type: str, criteria: Search, *, query: str
    ) -> Version | None:
        """``DELETE Type?criteria``: one match is deleted, none deletes nothing, several are a 412."""
        async with self._audit.audited(ctx, Interaction("delete", res_type, query=query)) as event:
            access = self._access(ctx, res_type, "d")
            within = self._scope(res_type, self._access(ctx, res_type, "s"))
            async with self._db.transaction() as tx:
                found = one_match(
                    await self._writer.matches(tx, criteria, lock=True, scope=within), "conditional delete"
                )
                if found is None:
                    return None
                await self._visible_or_absent(tx, access, res_type, found)
                return await self._writer.delete(tx, ctx, event, found, None)

    # -- bundles -----------------------------------------------------------------------------

    async def transaction(
        self, ctx: AccessContext, requests: list[bundle.Request], *,
        what: Interaction | None = None, receipt: Receipt | None = None,
    ) -> list[bundle.Outcome]:
        """The write entries of a transaction Bundle, all or nothing (ehr/store/bundle.py). One
        AuditEvent per entry and one for the whole (``what``, by default a transaction), committed
        with the data. A ``receipt`` commits with them too: the same (actor, key) again is refused
        with CONFLICT, before anything is written, and :meth:`receipt` returns the first reply."""
        async with self._audit.audited(ctx, what or Interaction("transaction")) as event:
            async with self._db.transaction() as tx:
                if receipt is not None:
                    await self._keep(tx, ctx, receipt)
                run = bundle.new_run(self._writer, tx, ctx, self.indexer.base, self._guard)
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
                run = bundle.new_run(self._writer, tx, ctx, self.indexer.base, self._guard)
                (outcome,) = await bundle.transaction(run, [request])
            return outcome
        except EhrError as err:
            what = Interaction(_SUBTYPES[request.method], request.res_type, request.res_id, query=request.query)
            what.failed(err.category, err.message)
            await self._audit.record(ctx, what)
            return bundle.Outcome(err.category.status, error=err)

    async def receipt(self, ctx: AccessContext, key: str) -> bytes | None:
        """The reply kept with an earlier transaction of this actor under ``key``, if any."""
        row = await self._db.fetch_one("SELECT reply FROM receipt WHERE actor = $1 AND key = $2", ctx.actor, key)
        return bytes(row["reply"]) if row else None

    async def _keep(self, tx: Executor, ctx: AccessContext, receipt: Receipt) -> None:
        try:
            await tx.execute(
                "INSERT INTO receipt (actor, key, ts_us, reply) VALUES ($1, $2, $3, $4)",
                ctx.actor, receipt.key, self._clock.now_us(), receipt.reply,
            )
        except Conflict:
            raise EhrError(Category.CONFLICT, "already received: the first reply stands") from None

    # -- internals ---------------------------------------------------------------------------

    def _authorize_create(self, ctx: AccessContext, res_type: str) -> None:
        self._access(ctx, res_type, "c")

    def _access(self, ctx: AccessContext, res_type: str, letter: Any) -> policy.Access:
        return self._guard.access(ctx, res_type, letter)

    def _scope(self, res_type: str, access: policy.Access) -> Scope:
        return self._guard.scope(res_type, access)

    async def _visible(self, executor: Executor, access: policy.Access, res_type: str, res_id: str) -> bool:
        return await self._guard.visible(executor, access, res_type, res_id)

    async def _visible_or_absent(self, tx: Executor, access: policy.Access, res_type: str, res_id: str) -> None:
        await self._guard.visible_or_absent(tx, access, res_type, res_id)

    def _search_scope(self, ctx: AccessContext, res_type: str | None, patient: str | None) -> Scope:
        """What one search may match and include. ``patient`` (Patient/{id}/...) narrows to that
        compartment, which must be the launch patient's when the access is confined to one."""
        readable = policy.view(ctx, "r")
        if res_type is not None:
            access = self._access(ctx, res_type, "s")
            types: tuple[str, ...] = (res_type,)
            filters = self._scope(res_type, access).filters
        else:
            searchable = policy.view(ctx, "s")
            access = policy.Access(searchable.patient)
            types = tuple(sorted(searchable.types if searchable.types is not None else RESOURCE_TYPES))
            filters = None
        confined = access.patient or readable.patient
        if confined and patient and patient != confined:
            raise EhrError(Category.NOT_FOUND, "Patient not found")
        return Scope(types or ("",), readable.types, confined or patient, filters)

    def _history_filter(
        self, ctx: AccessContext, res_type: str | None, res_id: str | None, since_us: int | None
    ) -> tuple[list[str], list[Any], policy.Access]:
        compiler = self._writer.compiler()
        where: list[str] = []
        if res_type is not None:
            access = self._access(ctx, res_type, "r")
            if res_id is None:
                access = self._access(ctx, res_type, "s")
            where.append(f"res_type = {compiler.arg(res_type)}")
            scope = self._scope(res_type, access)
        else:
            seen = policy.view(ctx, "r")
            access = policy.Access(seen.patient)
            if seen.types is not None:
                where.append(f"res_type IN ({compiler.args_list(sorted(seen.types) or [''])})")
            scope = Scope(("",), None, seen.patient)
        if res_id is not None:
            where.append(f"res_id = {compiler.arg(res_id)}")
        elif not access.unconfined:
            heads = " AND ".join(confinement(scope, compiler, "h"))
            where.append(f"(res_type, res_id) IN (SELECT h.res_type, h.res_id FROM resource_head h WHERE {heads})")
        if since_us is not None:
            where.append(f"ts_us >= {compiler.arg(since_us)}")
        return where, compiler.args, access


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""

