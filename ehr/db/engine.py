"""Engines for both databases, with the settings each needs to keep every acknowledged write.

SQLite: WAL, ``synchronous=FULL`` (a committed transaction survives power loss), a busy timeout so
several processes can share the file, and write transactions opened with ``BEGIN IMMEDIATE`` (set
the ``ehr_write`` execution option) so two writers never deadlock on a lock upgrade.
PostgreSQL: asyncpg; schema creation under an advisory lock so racing processes create it once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ehr.db.schema import metadata

_SCHEMA_LOCK_KEY = 0x0E4B5C4E  # arbitrary, fixed: pg_advisory_xact_lock key for schema creation


def create_engine(url: str, *, pool_size: int = 20, connect_args: dict[str, Any] | None = None) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30, **(connect_args or {})})
        _configure_sqlite(engine)
        return engine
    # A fixed pool: requests queue for a connection rather than open and close overflow connections
    # (each a new TCP + TLS + auth handshake) under load.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=0, pool_timeout=60, pool_pre_ping=False, connect_args=connect_args or {}
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("ehr_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


async def create_schema(engine: AsyncEngine) -> None:
    """Create missing tables and triggers; safe to call from several processes at once."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(ehr_write=True)
        async with conn.begin():
            if engine.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            await conn.run_sync(metadata.create_all)


async def write_connection(engine: AsyncEngine) -> AsyncConnection:
    conn = await engine.connect()
    return await conn.execution_options(ehr_write=True)


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same pool for single-statement reads: on PostgreSQL without BEGIN/ROLLBACK round trips."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine
