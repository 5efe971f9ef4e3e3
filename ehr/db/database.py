"""The database as the store uses it: a few async calls over the raw driver (asyncpg, or sqlite3
through aiosqlite), one SQL text for both engines.

Why not SQLAlchemy here: profiling `make bench` showed SQLAlchemy's async layer (greenlet hops,
pool checkout events, statement compilation) costing more CPU per read than everything else the
store does, crypto included (docs/adr/0005-raw-driver-hot-path.md). SQLAlchemy stays the schema's
definition and its DDL (ehr/db/schema.py).

SQL is written with PostgreSQL's ``$1``-style parameters; for SQLite they become ``?1`` (sqlite3
numbered parameters). ``FOR_UPDATE`` is appended where a row lock is wanted (SQLite serialises
writers with BEGIN IMMEDIATE instead).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

import aiosqlite
import asyncpg  # type: ignore[import-untyped]

Row = Mapping[str, Any]
_PARAM = re.compile(r"\$(\d+)")


class Conflict(Exception):
    """A unique or primary key was violated (a racing writer got there first)."""


Statement = tuple[str, Sequence[Any]]


class Executor(Protocol):
    async def fetch_one(self, sql: str, *args: Any) -> Row | None: ...
    async def fetch_all(self, sql: str, *args: Any) -> list[Row]: ...
    async def execute(self, sql: str, *args: Any) -> int: ...  # rows affected
    async def execute_all(self, statements: Sequence[Statement]) -> None: ...  # all or nothing


@runtime_checkable
class CopyExecutor(Executor, Protocol):
    """A transaction on PostgreSQL: rows can also go in by binary COPY."""

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Executor, Protocol):
    dialect: str
    for_update: str

    async def execute_all(self, statements: Sequence[Statement]) -> None: ...  # atomic, outside a transaction

    def transaction(self) -> Any: ...  # async context manager yielding an Executor; commits on exit
    def searching(self) -> Executor: ...  # reads whose best plan depends on the values (searches)
    async def close(self) -> None: ...


def open_database(url: str, *, pool_size: int = 20, search_path: str | None = None) -> Database:
    """``url`` is the SQLAlchemy-style URL of the settings (postgresql+asyncpg://..., sqlite+aiosqlite:///...)."""
    if url.startswith("sqlite"):
        return SqliteDatabase(url.split(":///", 1)[1])
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    return PostgresDatabase(dsn, pool_size=pool_size, search_path=search_path)


# -- PostgreSQL ----------------------------------------------------------------------------------


class _PgExecutor:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        row: Row | None = await self._conn.fetchrow(sql, *args)
        return row

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        return list(await self._conn.fetch(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._conn.execute(sql, *args)
        except asyncpg.UniqueViolationError:
            raise Conflict from None
        return int(status.rsplit(" ", 1)[-1]) if status[-1].isdigit() else 0

    async def execute_all(self, statements: Sequence[Statement]) -> None:
        await self.execute(*_one_statement(statements))

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            try:
                await self._conn.copy_records_to_table(table, records=[tuple(r) for r in rows], columns=list(columns))
            except asyncpg.UniqueViolationError:
                raise Conflict from None


def _renumber(text: str, offset: int) -> str:
    return _PARAM.sub(lambda m: f"${int(m[1]) + offset}", text)


def _one_statement(statements: Sequence[Statement]) -> tuple[str, ...]:
    """Several INSERT/UPDATE statements as one (data-modifying CTEs: PostgreSQL runs each exactly
    once, atomically): one round trip instead of BEGIN, n statements and COMMIT."""
    parts: list[str] = []
    args: list[Any] = []
    for text, values in statements:
        parts.append(_renumber(text, len(args)) if args else text)
        args.extend(values)
    head = ", ".join(f"s{n} AS ({part})" for n, part in enumerate(parts[:-1]))
    combined = f"WITH {head} {parts[-1]}" if head else parts[-1]
    return (combined, *args)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL round trip: the store never changes session state (no
    SET, LISTEN or session advisory locks); asyncpg still ends any open transaction."""


class PostgresDatabase:
    dialect = "postgresql"
    for_update = " FOR UPDATE"

    def __init__(self, dsn: str, *, pool_size: int, search_path: str | None, custom_plans: bool = False) -> None:
        self._dsn = dsn
        self._size = pool_size
        self._settings = {"search_path": search_path} if search_path else {}
        if custom_plans:
            self._settings["plan_cache_mode"] = "force_custom_plan"
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._searches: PostgresDatabase | None = None

    def searching(self) -> Executor:
        """Searches go through connections that plan every execution for its values: a search's
        statement text is the same for any key, and after five runs PostgreSQL would settle on one
        generic plan that walks every resource of the type in id order (11 ms instead of 0.3 ms at
        10,000 patients, measured by make bench)."""
        if self._searches is None:
            search_path = self._settings.get("search_path")
            self._searches = PostgresDatabase(
                self._dsn, pool_size=max(2, self._size // 2), search_path=search_path, custom_plans=True
            )
        return self._searches

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=1,
                        max_size=self._size,
                        server_settings=self._settings,
                        reset=_keep_session,
                    )
        return self._pool

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return await _PgExecutor(conn).fetch_one(sql, *args)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        pool = await self._get_pool()
        async with pool.acquire() as conn:
            return await _PgExecutor(conn).fetch_all(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        pool = await self._get_pool()
        async with pool.acquire() as conn:  # one statement: its own transaction
            return await _PgExecutor(conn).execute(sql, *args)

    async def execute_all(self, statements: Sequence[Statement]) -> None:
        await self.execute(*_one_statement(statements))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            yield _PgExecutor(conn)

    async def close(self) -> None:
        if self._searches is not None:
            await self._searches.close()
            self._searches = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# -- SQLite --------------------------------------------------------------------------------------


@lru_cache(maxsize=2048)
def _sqlite_sql(sql: str) -> str:
    """Texts repeat (bulk inserts reuse one text per row count): rewriting each of thousands of
    ``$n`` per execution was most of a transaction Bundle's Python time on SQLite."""
    return _PARAM.sub(r"?\1", sql)


class _SqliteExecutor:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self._conn.execute(_sqlite_sql(sql), args) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row  # type: ignore[return-value]  # a mapping by column name

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn.execute(_sqlite_sql(sql), args) as cursor:
            rows: list[sqlite3.Row] = list(await cursor.fetchall())
            return rows  # type: ignore[return-value]  # sqlite3.Row is a mapping by column name

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            async with self._conn.execute(_sqlite_sql(sql), args) as cursor:
                return cursor.rowcount
        except sqlite3.IntegrityError as exc:
            if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                raise Conflict from None
            raise

    async def execute_all(self, statements: Sequence[Statement]) -> None:
        for text, values in statements:
            await self.execute(text, *values)


class SqliteDatabase:
    """One writer connection (writes queue in-process; BEGIN IMMEDIATE and the busy timeout order
    them across processes) and a few reader connections (WAL lets them read during writes)."""

    dialect = "sqlite"
    for_update = ""
    _READERS = 4

    def __init__(self, path: str) -> None:
        self._path = path
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._opened: list[aiosqlite.Connection] = []
        self._opening = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self._path, isolation_level=None, timeout=30)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000", "foreign_keys=ON"):
            await conn.execute(f"PRAGMA {pragma}")
        self._opened.append(conn)
        return conn

    async def _ensure_open(self) -> None:
        if self._writer is None:
            async with self._opening:
                if self._writer is None:
                    for _ in range(self._READERS):
                        self._readers.put_nowait(await self._connect())
                    self._writer = await self._connect()

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[_SqliteExecutor]:
        await self._ensure_open()
        conn = await self._readers.get()
        try:
            yield _SqliteExecutor(conn)
        finally:
            self._readers.put_nowait(conn)

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        async with self._reader() as reader:
            return await reader.fetch_one(sql, *args)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        async with self._reader() as reader:
            return await reader.fetch_all(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.transaction() as tx:
            return await tx.execute(sql, *args)

    async def execute_all(self, statements: Sequence[Statement]) -> None:
        async with self.transaction() as tx:
            await tx.execute_all(statements)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        await self._ensure_open()
        assert self._writer is not None
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteExecutor(self._writer)
                await self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
                raise

    def searching(self) -> Executor:
        return self  # SQLite plans each statement as it is prepared

    async def close(self) -> None:
        for conn in self._opened:
            await conn.close()
        self._opened.clear()
        self._writer = None
        self._readers = asyncio.Queue()


def placeholders(start: int, count: int) -> str:
    """``$start, $start+1, ...`` for an IN list or a VALUES row."""
    return ", ".join(f"${n}" for n in range(start, start + count))


def columns(names: Sequence[str]) -> str:
    return ", ".join(names)
