"""Writes inside a caller's unit of work: each call appends a version, its head, its index rows and
its AuditEvent as one atomic group, so a single interaction and a whole transaction Bundle go through
the same code. Conditional interactions resolve their criteria here, under a lock on the criteria,
so two racing conditional creates with the same criteria make exactly one resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Protocol

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.crypto.keys import KeyStore
from ehr.db.database import Database, Executor, Row
from ehr.errors import Category, EhrError
from ehr.fhir.search.model import Search
from ehr.store import index, ingest, patch, persist, sql
from ehr.store.persist import Pending
from ehr.store.records import GENESIS, Version, head_row, instant, open_body, seal_version
from ehr.store.search import Runner, Scope
from ehr.store.search_sql import Compiler
from ehr.store.statistics import PlannerStatistics


class Clock(Protocol):
    def now_us(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    created: bool


class Writer:
    def __init__(self, db: Database, keys: KeyStore, audit: AuditLog, clock: Clock, indexer: index.Indexer) -> None:
        self._db = db
        self.keys = keys
        self._audit = audit
        self._clock = clock
        self.indexer = indexer
        self.statistics = PlannerStatistics(db)

    def compiler(self) -> Compiler:
        return Compiler(self.indexer.blind, self.indexer.local_target, self._clock.now_us(), self._db.dialect)

    async def matches(self, tx: Executor, criteria: Search, *, lock: bool, scope: Scope | None = None) -> list[str]:
        """Ids of the current resources matching ``criteria`` (at most 2: one, none or "several"),
        within ``scope`` (the caller's compartment and filters) when given. With ``lock``, first takes
        a transaction lock on the criteria (PostgreSQL; SQLite's writer already runs alone), so a
        racing conditional write with the same criteria waits for this one."""
        assert criteria.resource_type is not None
        self.statistics.refresh_soon()  # ``tx`` is open: never wait for ANALYZE here
        if lock and self._db.dialect == "postgresql":
            await tx.fetch_one("SELECT pg_advisory_xact_lock($1) AS locked", _criteria_lock(criteria))
        runner = Runner(tx, self.compiler, 2)
        return await runner.ids(criteria, scope or Scope((criteria.resource_type,), None))

    async def create(
        self, tx: Executor | Database, ctx: AccessContext, event: Interaction, res_id: str, resource: Any,
        defer: list[Pending] | None = None,
    ) -> Version:
        """A new resource under a fresh id (no head to lock: the group is one atomic statement)."""
        return await self.append(tx, ctx, event, res_id, None, resource, "create", defer)

    async def update(
        self, tx: Executor, ctx: AccessContext, event: Interaction, res_id: str, resource: Any, if_match: int | None,
        defer: list[Pending] | None = None, on_create: Callable[[], None] | None = None,
    ) -> WriteResult:
        """Update, or create under the client's id when there is none; ``on_create`` runs first in
        that case (the caller's check that creating is allowed too)."""
        res_type = event.resource_type or ""
        head = await tx.fetch_one(sql.HEAD + self._db.for_update, res_type, res_id)
        if head is None and on_create is not None:
            on_create()
        check_precondition(head, if_match)
        method = "create" if head is None else "update"
        written = await self.append(tx, ctx, event, res_id, head, resource, method, defer)
        return WriteResult(written, created=head is None or bool(head["deleted"]))

    async def patch(
        self, tx: Executor, ctx: AccessContext, event: Interaction, res_id: str, operations: patch.Patch,
        if_match: int | None, defer: list[Pending] | None = None, check: Callable[[Any], None] | None = None,
    ) -> Version:
        """Apply a patch to the current version and write the result as an update (``check`` may
        refuse the result)."""
        res_type = event.resource_type or ""
        head = await tx.fetch_one(sql.HEAD + self._db.for_update, res_type, res_id)
        check_precondition(head, if_match)
        if head is None or head["deleted"]:
            raise EhrError(Category.NOT_FOUND if head is None else Category.GONE, f"no current {res_type} to patch")
        current = await tx.fetch_one(sql.VERSION, res_type, res_id, head["version"])
        assert current is not None
        body = open_body(self.keys, current)
        assert body is not None
        patched = patch.apply(body, operations)
        ingest.check_resource(patched, res_type, res_id)
        if check is not None:
            check(patched)
        return await self.append(tx, ctx, event, res_id, head, patched, "update", defer)

    async def delete(
        self, tx: Executor, ctx: AccessContext, event: Interaction, res_id: str, if_match: int | None,
        defer: list[Pending] | None = None,
    ) -> Version | None:
        """A tombstone; deleting what does not exist, or is already deleted, writes nothing."""
        head = await tx.fetch_one(sql.HEAD + self._db.for_update, event.resource_type or "", res_id)
        check_precondition(head, if_match)
        if head is None or head["deleted"]:
            return None
        return await self.append(tx, ctx, event, res_id, head, None, "delete", defer)

    async def append(
        self,
        tx: Executor | Database,
        ctx: AccessContext,
        event: Interaction,
        res_id: str,
        head: Row | None,
        resource: Any,
        method: str,
        defer: list[Pending] | None = None,
    ) -> Version:
        """The next version, its head, its index rows and its AuditEvent, written as one atomic unit
        now, or added to ``defer`` for the caller to :meth:`flush` within the same transaction."""
        pending, version = self._prepare(ctx, event, res_id, head, resource, method)
        if defer is None:
            await self.flush(tx, [pending])
        else:
            defer.append(pending)
        event.committed = True  # its AuditEvent commits with the data (or not at all)
        return version

    async def flush(self, tx: Executor | Database, pendings: list[Pending]) -> None:
        if pendings:
            await persist.write(tx, self._db.dialect, pendings)
            self.statistics.wrote(len(pendings))

    def _prepare(
        self, ctx: AccessContext, event: Interaction, res_id: str, head: Row | None, resource: Any, method: str
    ) -> tuple[Pending, Version]:
        res_type = event.resource_type or ""
        version = 1 if head is None else head["version"] + 1
        ts_us = self._clock.now_us() if head is None else max(self._clock.now_us(), head["ts_us"] + 1)
        body = None if resource is None else ingest.stamp(resource, res_id, version, instant(ts_us))
        rows = None if resource is None else self.indexer.rows(res_type, res_id, resource)
        row: dict[str, Any] = {
            "res_type": res_type,
            "res_id": res_id,
            "version": version,
            "compartment": rows.compartment if rows is not None else head["compartment"] if head else None,
            "ts_us": ts_us,
            "method": method,
            "deleted": resource is None,
            "actor": ctx.actor,
            "prev_hash": GENESIS if head is None else bytes(head["hash"]),
        }
        seal_version(self.keys, row, body)
        event.resource_id, event.version, event.patient = res_id, version, row["compartment"]
        pending = Pending(row, head_row(self.keys, row), head is None, rows, self._audit.prepare(ctx, event).row)
        return pending, Version(res_type, res_id, version, ts_us, resource is None, method, body)


def check_precondition(head: Row | None, if_match: int | None) -> None:
    if if_match is None:
        return
    if head is None or head["version"] != if_match:
        raise EhrError(Category.PRECONDITION_FAILED, "If-Match does not name the current version")


def one_match(found: list[str], what: str) -> str | None:
    """R4 conditional outcomes: none (None), one (its id), several (412)."""
    if len(found) > 1:
        raise EhrError(Category.PRECONDITION_FAILED, f"the {what} criteria match more than one resource")
    return found[0] if found else None


def _criteria_lock(criteria: Search) -> int:
    """A 64-bit advisory lock key for the type and the (order-independent) criteria."""
    text = "\n".join([criteria.resource_type or "", *sorted(repr(c) for c in criteria.criteria)])
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)
