"""Integrity (164.312(c)): the database refuses changes to versions, and `verify` catches each
kind of tampering done directly in the database by someone who can drop the guards."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.context import system_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.errors import EhrError
from ehr.store.rewrap import rewrap_all
from ehr.store.service import Store
from ehr.store.verify import verify_store

CTX = system_context("test")


def patient(name: str, rid: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": name}]}
    if rid:
        resource["id"] = rid
    return resource


async def _history_of_three(store: Store) -> None:
    await store.update(CTX, "Patient", "a", patient("One", "a"))
    await store.update(CTX, "Patient", "a", patient("Two", "a"))
    await store.update(CTX, "Patient", "a", patient("Three", "a"))
    await store.update(CTX, "Patient", "b", patient("Other", "b"))


async def _tamper(engine: AsyncEngine, *statements: str) -> None:
    """What an attacker with DDL rights does: drop the guard triggers, then write."""
    drops = {
        "sqlite": ["DROP TRIGGER resource_version_no_update", "DROP TRIGGER resource_version_no_delete"],
        "postgresql": ["DROP TRIGGER resource_version_append_only ON resource_version"],
    }[engine.dialect.name]
    async with engine.begin() as conn:
        for statement in drops + list(statements):
            await conn.execute(text(statement))


async def problems(db: Database, keys: MemoryKeyStore) -> list[str]:
    report = await verify_store(db, keys)
    return [f"{p.record}: {p.message}" for p in report.problems]


async def test_untouched_store_verifies(store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore) -> None:
    await _history_of_three(store)
    await store.delete(CTX, "Patient", "b")
    report = await verify_store(db, keys)
    assert report.ok, report.problems
    assert (report.resources, report.versions) == (2, 5)


@pytest.mark.parametrize("statement", ["UPDATE resource_version SET actor = 'x'", "DELETE FROM resource_version"])
async def test_database_refuses_changes_to_versions(
    store: Store, db: Database, engine: AsyncEngine, statement: str
) -> None:
    await _history_of_three(store)
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))


@pytest.mark.parametrize("engine_kind", ["postgresql"])  # SQLite has no TRUNCATE
async def test_postgresql_refuses_truncate(store: Store, db: Database, engine: AsyncEngine) -> None:
    await _history_of_three(store)
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE resource_version"))


async def test_flipped_byte_in_body_is_caught(
    store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _history_of_three(store)
    async with engine.connect() as conn:
        sql = "SELECT ciphertext FROM resource_version WHERE res_id = 'a' AND version = 2"
        body = bytearray((await conn.execute(text(sql))).scalar_one())
    body[5] ^= 0x01
    await _tamper(engine)
    async with engine.begin() as conn:
        sql = "UPDATE resource_version SET ciphertext = :body WHERE res_id = 'a' AND version = 2"
        await conn.execute(text(sql), {"body": bytes(body)})
    found = await problems(db, keys)
    assert any("Patient/a/_history/2" in p and "decrypt" in p for p in found), found


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_deleted_version_is_caught(
    store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore, version: int
) -> None:
    await _history_of_three(store)
    await _tamper(engine, f"DELETE FROM resource_version WHERE res_id = 'a' AND version = {version}")
    found = await problems(db, keys)
    assert any(p.startswith("Patient/a") for p in found), found


async def test_body_moved_to_another_row_is_caught(
    store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _history_of_three(store)
    move = (
        "UPDATE resource_version SET kek_id = src.kek_id, wrapped_key = src.wrapped_key, "
        "nonce = src.nonce, ciphertext = src.ciphertext, content_hash = src.content_hash "
        "FROM (SELECT kek_id, wrapped_key, nonce, ciphertext, content_hash FROM resource_version "
        "WHERE res_id = 'b' AND version = 1) AS src WHERE res_id = 'a' AND version = 3"
    )
    await _tamper(engine, move)
    found = await problems(db, keys)
    assert any("Patient/a/_history/3" in p and "decrypt" in p for p in found), found


async def test_forged_signature_is_caught(
    store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _history_of_three(store)
    forged = "0" * 128
    literal = {"sqlite": f"X'{forged}'", "postgresql": f"'\\x{forged}'::bytea"}[engine.dialect.name]
    await _tamper(engine, f"UPDATE resource_version SET signature = {literal} WHERE res_id = 'b'")
    found = await problems(db, keys)
    assert any("Patient/b/_history/1" in p and "signature" in p for p in found), found


async def test_changed_header_is_caught(store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore) -> None:
    await _history_of_three(store)
    await _tamper(engine, "UPDATE resource_version SET actor = 'someone-else' WHERE res_id = 'a' AND version = 1")
    found = await problems(db, keys)
    assert any("Patient/a/_history/1" in p and "hash" in p for p in found), found


async def test_rewrap_moves_keys_and_keeps_everything_readable(
    store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await _history_of_three(store)
    old, _ = keys.active_kek()
    new = keys.rotate_kek()
    await store.update(CTX, "Patient", "c", patient("New", "c"))
    assert await rewrap_all(db, keys) == 4
    async with engine.connect() as conn:
        kids = set((await conn.execute(text("SELECT DISTINCT kek_id FROM resource_version"))).scalars())
    assert kids == {new} and old != new
    assert (await verify_store(db, keys)).ok
    assert b"Three" in ((await store.read(CTX, "Patient", "a")).body or b"")


async def test_racing_updates_with_same_if_match_one_wins(store: Store, db: Database, engine: AsyncEngine) -> None:
    await store.update(CTX, "Patient", "r", patient("Race", "r"))

    async def attempt(n: int) -> str:
        try:
            await store.update(CTX, "Patient", "r", patient(f"Writer{n}", "r"), if_match=1)
            return "won"
        except EhrError as err:
            return err.category.name

    outcomes = await asyncio.gather(*(attempt(n) for n in range(8)))
    assert outcomes.count("won") == 1, outcomes
    assert set(outcomes) == {"won", "PRECONDITION_FAILED"}
    history = await store.history(CTX, "Patient", "r", count=50)
    assert [v.version for v in history.versions] == [2, 1]


async def test_racing_updates_without_if_match_are_gap_free(
    store: Store, db: Database, engine: AsyncEngine, keys: MemoryKeyStore
) -> None:
    await asyncio.gather(*(store.update(CTX, "Patient", "g", patient(f"W{n}", "g")) for n in range(10)))
    history = await store.history(CTX, "Patient", "g", count=50)
    assert sorted(v.version for v in history.versions) == list(range(1, 11))
    assert (await verify_store(db, keys)).ok
