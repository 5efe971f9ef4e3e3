"""Planner statistics follow this process's writes on PostgreSQL (ehr/store/statistics.py)."""

from __future__ import annotations

import asyncio

from ehr.context import system_context
from ehr.db.database import Database
from ehr.fhir.search.query import parse
from ehr.store import statistics
from ehr.store.bundle import Request
from ehr.store.search import SEARCHABLE, criteria_of, supported_params
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


async def test_a_conditional_write_in_a_transaction_when_statistics_are_due_does_not_wait_for_them(
    store: Store, db: Database
) -> None:
    """On SQLite ANALYZE needs the writer the transaction holds: awaiting it there hung every writer
    (found by the HL7 v2 benchmark: conditional creates, once 200 resources were written)."""
    ctx = system_context("stats")
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "1"}]}
    store._writer.statistics.wrote(statistics.FIRST)  # due now
    entry = Request(0, "POST", "Patient", resource=patient, criteria=criteria_of(
        "Patient", "identifier=urn:x|1", "https://ehr.test/fhir", "If-None-Exist"))
    (outcome,) = await asyncio.wait_for(store.transaction(ctx, [entry]), 20)
    assert outcome.status == 201
    refresh = store._writer.statistics._soon  # started, not awaited, by the conditional entry
    assert refresh is not None
    await asyncio.wait_for(refresh, 20)  # and it ran once the writer was free
    assert refresh.exception() is None
