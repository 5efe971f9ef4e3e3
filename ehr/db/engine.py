"""Schema creation with SQLAlchemy (the store itself talks to the drivers: ehr/db/database.py).

Several processes may start at once: on PostgreSQL the DDL runs under an advisory lock, on SQLite
under BEGIN IMMEDIATE, so the schema is created exactly once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ehr.db.schema import metadata

_SCHEMA_LOCK_KEY = 0x0E4B5C4E  # arbitrary, fixed: pg_advisory_xact_lock key for schema creation


def ddl_engine(url: str, connect_args: dict[str, Any] | None = None) -> AsyncEngine:
    """A small SQLAlchemy engine for DDL, administration and tests."""
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_size=1, max_overflow=0, connect_args=connect_args or {})
    engine = create_async_engine(url, connect_args={"timeout": 30, **(connect_args or {})})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        for pragma in ("journal_mode=WAL", "busy_timeout=30000"):
            dbapi_connection.cursor().execute(f"PRAGMA {pragma}")

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


async def ensure_schema(url: str, connect_args: dict[str, Any] | None = None) -> None:
    """Create what is missing of the schema; safe to call from several processes at once."""
    engine = ddl_engine(url, connect_args)
    try:
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
            await conn.run_sync(metadata.create_all)
    finally:
        await engine.dispose()
