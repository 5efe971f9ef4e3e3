"""Planner statistics follow this process's writes on PostgreSQL (ehr/store/statistics.py)."""

from __future__ import annotations

from ehr.context import system_context
from ehr.db.database import Database
from ehr.fhir.search.query import parse
from ehr.store import statistics
from ehr.store.search import SEARCHABLE, supported_params
from ehr.store.service import Store


async def analysed(db: Database) -> float:
    if db.dialect == "sqlite":
        if await db.fetch_one("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'") is None:
            return 0
        row = await db.fetch_one("SELECT count(*) AS n FROM sqlite_stat1 WHERE tbl = 'search_key'")
    else:
        row = await db.fetch_one("SELECT reltuples AS n FROM pg_class WHERE oid = 'search_key'::regclass")
    assert row is not None
    return float(row["n"])


async def test_a_search_after_a_bulk_load_runs_on_fresh_statistics(store: Store, db: Database) -> None:
    ctx = system_context("stats")
    patient = {"resourceType": "Patient", "name": [{"family": "Statistica"}]}
    search = parse("Patient", [("family", "stat")], supported_params, base="https://ehr.test/fhir",
                   strict=True, max_count=10, resource_types=SEARCHABLE)
    for _ in range(statistics.FIRST - 1):
        await store.create(ctx, "Patient", patient)
    await store.search(ctx, search, query="family=stat")
    assert await analysed(db) <= 0  # not yet: below the first threshold
    await store.create(ctx, "Patient", patient)
    page, _, _ = await store.search(ctx, search, query="family=stat")
    assert page.total == statistics.FIRST
    assert await analysed(db) > 0
