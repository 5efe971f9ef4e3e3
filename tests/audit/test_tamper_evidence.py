"""The audit log is append-only in the database, and `verify_audit` catches what someone with DDL
rights does around that: change, remove, insert, reorder, cut, forge."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.audit.verify import verify_audit
from ehr.context import system_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database

CTX = system_context("audit-tests")
TABLES = ("audit_event", "audit_chain", "audit_checkpoint")


async def sealed(audit: AuditLog) -> int:
    """Seal, waiting out transactions still open elsewhere on a shared PostgreSQL server (the
    sealer's horizon is cluster-wide)."""
    for _ in range(200):
        if (count := await audit.seal()) > 0:
            return count
        await asyncio.sleep(0.05)
    raise AssertionError("nothing became ready to seal within 10 s")


async def _ten_sealed(audit: AuditLog) -> None:
    for n in range(10):
        await audit.record(CTX, Interaction("read", "Patient", f"p{n}", patient=f"p{n}"))
        if n in (3, 9):
            assert await sealed(audit) > 0


async def _problems(db: Database, keys: MemoryKeyStore) -> list[str]:
    report = await verify_audit(db, keys)
    return [f"{p.where}: {p.message}" for p in report.problems]


async def _tamper(engine: AsyncEngine, *statements: str) -> None:
    drops = {
        "sqlite": [f"DROP TRIGGER {t}_no_{op}" for t in TABLES for op in ("update", "delete")],
        "postgresql": [f"DROP TRIGGER {t}_append_only ON {t}" for t in TABLES],
    }[engine.dialect.name]
    async with engine.begin() as conn:
        for statement in drops + list(statements):
            await conn.execute(text(statement))


async def test_sealed_log_verifies(audit: AuditLog, db: Database, keys: MemoryKeyStore) -> None:
    await _ten_sealed(audit)
    report = await verify_audit(db, keys)
    assert report.ok, report.problems
    assert (report.chained, report.checkpoints, report.pending) == (10, 2, 0)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("verb", ["UPDATE {t} SET ts_us = 1", "DELETE FROM {t}"])
async def test_database_refuses_changes(
    audit: AuditLog, engine: AsyncEngine, table: str, verb: str
) -> None:
    await _ten_sealed(audit)
    statement = verb.format(t=table)
    if table != "audit_checkpoint":
        statement = statement.replace("ts_us", "pos" if table == "audit_chain" else "recorded_us")
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))


async def test_changed_record_is_caught(
    audit: AuditLog, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _ten_sealed(audit)
    await _tamper(engine, "UPDATE audit_event SET outcome = '8' WHERE entity_id = 'p2'")
    assert any("columns disagree" in p for p in await _problems(db, keys))


async def test_removed_record_is_caught(
    audit: AuditLog, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _ten_sealed(audit)
    await _tamper(engine, "DELETE FROM audit_event WHERE entity_id = 'p5'")
    assert any("removed" in p for p in await _problems(db, keys))


async def test_record_slipped_in_is_caught(
    audit: AuditLog, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _ten_sealed(audit)
    prepared = audit.prepare(CTX, Interaction("read", "Patient", "ghost"))
    event_insert, _pending = prepared.statements
    await db.execute(event_insert[0], *event_insert[1])  # the event row alone, around the log
    assert any("never chained" in p for p in await _problems(db, keys))


async def test_reordered_records_are_caught(
    audit: AuditLog, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _ten_sealed(audit)
    await _tamper(
        engine,
        "UPDATE audit_chain SET pos = -2 WHERE pos = 2",
        "UPDATE audit_chain SET pos = 2 WHERE pos = 3",
        "UPDATE audit_chain SET pos = 3 WHERE pos = -2",
    )
    assert any("chain hash does not match" in p for p in await _problems(db, keys))


async def test_cut_tail_is_caught(
    audit: AuditLog, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _ten_sealed(audit)
    await _tamper(engine, "DELETE FROM audit_chain WHERE pos > 7")
    found = await _problems(db, keys)
    assert any("checkpoint 10" in p for p in found), found


async def test_forged_checkpoint_is_caught(
    audit: AuditLog, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _ten_sealed(audit)
    forged = "0" * 128
    literal = {"sqlite": f"X'{forged}'", "postgresql": f"'\\x{forged}'::bytea"}[engine.dialect.name]
    await _tamper(engine, f"UPDATE audit_checkpoint SET signature = {literal} WHERE pos = 4")
    assert any("checkpoint 4: signature" in p for p in await _problems(db, keys))


@pytest.mark.parametrize("engine_kind", ["postgresql"])
async def test_sealer_waits_for_transactions_still_running(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, database_url: str, schema: dict[str, object]
) -> None:
    """An event whose transaction began first but commits last is chained, not skipped."""
    import asyncpg  # type: ignore[import-untyped]

    late = audit.prepare(CTX, Interaction("read", "Patient", "late"))
    search_path = schema["server_settings"]["search_path"]  # type: ignore[index]
    conn = await asyncpg.connect(database_url.replace("+asyncpg", ""), server_settings={"search_path": search_path})
    try:
        transaction = conn.transaction()
        await transaction.start()
        for sql, args in late.statements:
            await conn.execute(sql, *args)
        await audit.record(CTX, Interaction("read", "Patient", "early"))
        assert await audit.seal() == 0  # "early" must wait: "late" might still commit before it
        await transaction.commit()
    finally:
        await conn.close()
    chained = 0
    while chained < 2:
        chained += await sealed(audit)
    assert chained == 2
    report = await verify_audit(db, keys)
    assert report.ok and report.chained == 2, report.problems
