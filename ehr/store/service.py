"""The store: the one door to ePHI. Every way in (HTTP, HL7 v2, import, CLI) calls these methods
with an AccessContext; each method authorizes, validates, versions, signs, encrypts and persists in
one transaction. Built once per process over an engine and a key store; holds no request state.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import func, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ehr.context import AccessContext
from ehr.crypto.keys import KeyStore
from ehr.db.engine import reader, write_connection
from ehr.db.schema import resource_head, resource_version
from ehr.errors import Category, EhrError
from ehr.store import ingest, policy
from ehr.store.records import GENESIS, Row, Version, head_row, instant, seal_version, to_version

_WRITE_ATTEMPTS = 3


class Clock(Protocol):
    def now_us(self) -> int: ...


class SystemClock:
    def now_us(self) -> int:
        return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    created: bool


@dataclass(frozen=True, slots=True)
class HistoryPage:
    versions: list[Version]
    total: int
    next_cursor: tuple[int, str, str, int] | None


class Store:
    def __init__(self, engine: AsyncEngine, keys: KeyStore, clock: Clock | None = None) -> None:
        self._engine = engine
        self._reader = reader(engine)
        self._keys = keys
        self._clock = clock or SystemClock()

    # -- reads -------------------------------------------------------------------------------

    async def read(self, ctx: AccessContext, res_type: str, res_id: str) -> Version:
        """The current version; GONE when its newest version is a delete."""
        self._authorize(ctx, res_type, "r")
        async with self._reader.connect() as conn:
            row = await self._newest(conn, res_type, res_id)
        if row is None:
            raise EhrError(Category.NOT_FOUND, f"{res_type} not found")
        found = to_version(self._keys, row)
        if found.deleted:
            raise EhrError(Category.GONE, f"{res_type} was deleted", headers={"ETag": found.etag})
        return found

    async def vread(self, ctx: AccessContext, res_type: str, res_id: str, version: int) -> Version:
        self._authorize(ctx, res_type, "r")
        query = select(resource_version).where(
            resource_version.c.res_type == res_type,
            resource_version.c.res_id == res_id,
            resource_version.c.version == version,
        )
        async with self._reader.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise EhrError(Category.NOT_FOUND, f"{res_type} version not found")
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
        cursor: tuple[int, str, str, int] | None = None,
    ) -> HistoryPage:
        """Versions newest first, in pages of ``count``, keyset-paged so that writes during paging
        neither repeat nor skip an entry."""
        where = self._history_filter(ctx, res_type, res_id, since_us)
        v = resource_version.c
        order = (v.ts_us.desc(), v.res_type.desc(), v.res_id.desc(), v.version.desc())
        page = select(resource_version).where(*where).order_by(*order).limit(count + 1)
        if cursor is not None:
            page = page.where(tuple_(v.ts_us, v.res_type, v.res_id, v.version) < tuple_(*cursor))
        async with self._reader.connect() as conn:
            if res_id is not None and await self._newest(conn, res_type or "", res_id) is None:
                raise EhrError(Category.NOT_FOUND, f"{res_type} not found")
            rows = list((await conn.execute(page)).mappings())
            total = (await conn.execute(select(func.count()).select_from(resource_version).where(*where))).scalar_one()
        versions = [to_version(self._keys, row) for row in rows[:count]]
        last = versions[-1] if versions and len(rows) > count else None
        next_cursor = (last.ts_us, last.res_type, last.res_id, last.version) if last else None
        return HistoryPage(versions, total, next_cursor)

    # -- writes ------------------------------------------------------------------------------

    async def create(self, ctx: AccessContext, res_type: str, resource: Any) -> Version:
        """Create with a server-assigned id (any id in the body is ignored, as R4 says)."""
        self._authorize(ctx, res_type, "c")
        ingest.check_resource(resource, res_type, None)
        res_id = str(uuid.uuid4())
        async with self._write() as conn:
            created = await self._append(conn, ctx, res_type, res_id, None, resource, "create")
        return created

    async def update(
        self, ctx: AccessContext, res_type: str, res_id: str, resource: Any, if_match: int | None = None
    ) -> WriteResult:
        """Update, or create with the client's id when there is none (create needs the 'c' grant too)."""
        self._authorize(ctx, res_type, "u")
        ingest.check_id(res_id)
        ingest.check_resource(resource, res_type, res_id)
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                async with self._write() as conn:
                    head = await self._head(conn, res_type, res_id)
                    if head is None:
                        self._authorize(ctx, res_type, "c")
                    _check_precondition(head, if_match)
                    method = "create" if head is None else "update"
                    written = await self._append(conn, ctx, res_type, res_id, head, resource, method)
                return WriteResult(written, created=head is None or bool(head["deleted"]))
            except IntegrityError:  # a racing create-on-update inserted the same id first: retry as update
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise EhrError(Category.CONFLICT, "concurrent writes to this resource; try again") from None
        raise AssertionError("unreachable")

    async def delete(
        self, ctx: AccessContext, res_type: str, res_id: str, if_match: int | None = None
    ) -> Version | None:
        """Write a tombstone version. Deleting what does not exist, or is already deleted, writes nothing."""
        self._authorize(ctx, res_type, "d")
        async with self._write() as conn:
            head = await self._head(conn, res_type, res_id)
            _check_precondition(head, if_match)
            if head is None or head["deleted"]:
                return None
            return await self._append(conn, ctx, res_type, res_id, head, None, "delete")

    # -- internals ---------------------------------------------------------------------------

    def _authorize(self, ctx: AccessContext, res_type: str, letter: Any) -> None:
        ingest.check_type(res_type)
        policy.require(ctx, res_type, letter)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        conn = await write_connection(self._engine)
        try:
            async with conn.begin():
                yield conn
        finally:
            await conn.close()

    async def _append(
        self,
        conn: AsyncConnection,
        ctx: AccessContext,
        res_type: str,
        res_id: str,
        head: Row | None,
        resource: Any,
        method: str,
    ) -> Version:
        version = 1 if head is None else head["version"] + 1
        ts_us = self._clock.now_us() if head is None else max(self._clock.now_us(), head["ts_us"] + 1)
        body = None if resource is None else ingest.stamp(resource, res_id, version, instant(ts_us))
        row: dict[str, Any] = {
            "res_type": res_type,
            "res_id": res_id,
            "version": version,
            "compartment": ingest.compartment_of(res_type, res_id),
            "ts_us": ts_us,
            "method": method,
            "deleted": resource is None,
            "actor": ctx.actor,
            "prev_hash": GENESIS if head is None else bytes(head["hash"]),
        }
        seal_version(self._keys, row, body)
        await conn.execute(insert(resource_version), [row])
        new_head = head_row(self._keys, row)
        if head is None:
            await conn.execute(insert(resource_head), [new_head])
        else:
            await conn.execute(
                update(resource_head)
                .where(resource_head.c.res_type == res_type, resource_head.c.res_id == res_id)
                .values(new_head)
            )
        return Version(res_type, res_id, version, ts_us, resource is None, method, body)

    async def _head(self, conn: AsyncConnection, res_type: str, res_id: str) -> Row | None:
        query = (
            select(resource_head)
            .where(resource_head.c.res_type == res_type, resource_head.c.res_id == res_id)
            .with_for_update()
        )
        return (await conn.execute(query)).mappings().first()

    async def _newest(self, conn: AsyncConnection, res_type: str, res_id: str) -> Row | None:
        query = (
            select(resource_version)
            .where(resource_version.c.res_type == res_type, resource_version.c.res_id == res_id)
            .order_by(resource_version.c.version.desc())
            .limit(1)
        )
        return (await conn.execute(query)).mappings().first()

    def _history_filter(
        self, ctx: AccessContext, res_type: str | None, res_id: str | None, since_us: int | None
    ) -> list[Any]:
        v = resource_version.c
        where: list[Any] = []
        if res_type is not None:
            self._authorize(ctx, res_type, "r")
            if res_id is None:
                self._authorize(ctx, res_type, "s")
            where.append(v.res_type == res_type)
        else:
            allowed = policy.readable_types(ctx)
            if allowed is not None:
                where.append(v.res_type.in_(sorted(allowed)) if allowed else v.res_type.is_(None))
        if res_id is not None:
            where.append(v.res_id == res_id)
        if since_us is not None:
            where.append(v.ts_us >= since_us)
        return where


def _check_precondition(head: Row | None, if_match: int | None) -> None:
    if if_match is None:
        return
    if head is None or head["version"] != if_match:
        raise EhrError(Category.PRECONDITION_FAILED, "If-Match does not name the current version")


__all__ = ["Clock", "HistoryPage", "Store", "SystemClock", "WriteResult"]
