"""The alert monitor (ehr/audit/alert_store.py) over a real audit log on both engines: alerts as
sealed events arrive, stored once in audit_alert, counted right across processes and restarts, and
nothing for the hot path to pay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.api.services import Services
from ehr.audit.alert_store import AlertMonitor, format_alert, list_alerts, parse_since
from ehr.audit.alerts import BREAK_GLASS, MASS_ACCESS, REFUSALS, Hours, Rules
from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.audit.webhook import Webhook
from ehr.context import AccessContext, system_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database, Row, Statement, open_database
from ehr.errors import EhrError
from ehr.pki import DevPki
from tests.audit.test_alerts_webhook import Receiver
from tests.conftest import FixedClock, make_client, register

CTX = system_context("alerts-tests")
RULES = Rules(hours=Hours.parse("00:00-00:00", "UTC"))  # no off-hours: the fixed clock starts at midnight
_CHAINED_AFTER = (
    "SELECT c.pos, e.id AS event_id, e.recorded_us, e.action, e.subtype, e.outcome, e.agent, e.patient, "
    "e.purpose, e.address FROM audit_chain c JOIN audit_event e ON e.id = c.event_id WHERE c.pos > $1 "
    "ORDER BY c.pos"
)


async def seal(audit: AuditLog) -> int:
    for _ in range(100):  # on PostgreSQL a transaction running elsewhere on the server holds the horizon
        if sealed := await audit.seal():
            return sealed
        await asyncio.sleep(0.05)
    raise AssertionError("nothing was sealed")


async def seal_into(audit: AuditLog, db: Database, *monitors: AlertMonitor) -> None:
    """Seal, and hand what was sealed to ``monitors`` as the sealer of ehr/audit/log.py does."""
    head = await db.fetch_one("SELECT coalesce(max(pos), 0) AS pos FROM audit_chain")
    assert head is not None
    await seal(audit)
    rows = await db.fetch_all(_CHAINED_AFTER, int(head["pos"]))
    for monitor in monitors:
        monitor.on_sealed(int(head["pos"]) + 1, rows)
        await monitor.drain()


async def reads(audit: AuditLog, patients: Sequence[str], ctx: AccessContext = CTX) -> list[str]:
    """One successful read per patient, group-committed like concurrent requests."""
    ids: list[str] = []
    for start in range(0, len(patients), 200):
        ids += await asyncio.gather(*(
            audit.record(ctx, Interaction("read", "Patient", p, patient=p)) for p in patients[start : start + 200]
        ))
    return ids


def monitor(db: Database, keys: MemoryKeyStore, clock: FixedClock, webhook: Webhook | None = None) -> AlertMonitor:
    return AlertMonitor(db, keys, clock, RULES, webhook)


async def alerts(db: Database, rule: str | None = None) -> list[Row]:
    return await list_alerts(db, 0, rule)


class Counting:
    """The real database, counting the queries made through it."""

    def __init__(self, db: Database, fail_on: str | None = None) -> None:
        self._db, self._fail_on = db, fail_on
        self.dialect, self.for_update = db.dialect, db.for_update
        self.calls = 0

    def _count(self, sql: str) -> None:
        self.calls += 1
        if self._fail_on and sql.startswith(self._fail_on):
            self._fail_on = None
            raise ConnectionResetError("the database went away")

    async def fetch_one(self, sql: str, *args: Any) -> Row | None:
        self._count(sql)
        return await self._db.fetch_one(sql, *args)

    async def fetch_all(self, sql: str, *args: Any) -> list[Row]:
        self._count(sql)
        return await self._db.fetch_all(sql, *args)

    async def execute(self, sql: str, *args: Any) -> int:
        self._count(sql)
        return await self._db.execute(sql, *args)

    async def execute_all(self, statements: Sequence[Statement]) -> None:
        self._count(statements[0][0])
        await self._db.execute_all(statements)

    def transaction(self) -> Any:
        return self._db.transaction()

    async def close(self) -> None:
        await self._db.close()


async def test_mass_access_is_stored_once_above_the_threshold(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock
) -> None:
    watcher = monitor(db, keys, clock)
    await reads(audit, [f"pat-{n}" for n in range(50)])
    await seal_into(audit, db, watcher)
    assert await alerts(db) == []
    [tip] = await reads(audit, ["pat-50"])
    await reads(audit, ["pat-51", "pat-52"])  # same window: no second alert
    await seal_into(audit, db, watcher)
    [alert] = await alerts(db)
    assert (alert["rule"], alert["subject"], alert["event_id"]) == (MASS_ACCESS, CTX.actor, tip)
    assert '"count":51' in alert["detail"] and "pat-" not in alert["detail"]


async def test_the_load_test_shape_costs_no_query(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock
) -> None:
    """Thousands of reads of one patient by one client: no alert, and no query beyond the start."""
    counting = Counting(db)
    watcher = monitor(counting, keys, clock)
    await reads(audit, ["pat-1"] * 500)
    await seal_into(audit, db, watcher)
    at_start = counting.calls  # the rebuild: alerts raised lately, the chain position of the window
    for _ in range(3):
        await reads(audit, ["pat-1"] * 1000)
        await seal_into(audit, db, watcher)
    assert counting.calls == at_start <= 2
    assert await alerts(db) == []


async def test_refusals_through_the_api(services: Services, pki: DevPki, db: Database, keys: MemoryKeyStore,
                                        clock: FixedClock) -> None:
    """403s (scopes) count for the client and its address; 401s (no certificate) for the address."""
    watcher = monitor(db, keys, clock)
    client_id = await register(services, pki.client_cert.read_text(), "system/Observation.rs")
    async with await make_client(services, pki.client_cert.read_text()) as client:
        for _ in range(5):
            assert (await client.get("Patient/p1")).status_code == 403
        await seal_into(services.audit, db, watcher)
        assert await alerts(db) == []
        assert (await client.get("Patient/p1")).status_code == 403
    await seal_into(services.audit, db, watcher)
    assert {(a["subject"], a["rule"]) for a in await alerts(db)} == {(client_id, REFUSALS), ("127.0.0.1", REFUSALS)}


async def test_unauthenticated_refusals_count_by_address(services: Services, db: Database,
                                                         keys: MemoryKeyStore, clock: FixedClock) -> None:
    watcher = monitor(db, keys, clock)
    async with await make_client(services, None) as anonymous:
        for _ in range(6):
            assert (await anonymous.get("Patient/p1")).status_code == 401
    await seal_into(services.audit, db, watcher)
    assert [(a["subject"], a["rule"]) for a in await alerts(db)] == [("127.0.0.1", REFUSALS)]


async def test_not_found_is_not_a_refusal(fhir: httpx.AsyncClient, services: Services, db: Database,
                                          keys: MemoryKeyStore, clock: FixedClock) -> None:
    watcher = monitor(db, keys, clock)
    for n in range(10):
        assert (await fhir.get(f"Patient/missing-{n}")).status_code == 404
    await seal_into(services.audit, db, watcher)
    assert await alerts(db) == []


async def test_break_glass_alerts_at_the_first_event(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock
) -> None:
    watcher = monitor(db, keys, clock)
    emergency = replace(CTX, purpose="BTG")
    [first, *_] = [await audit.record(emergency, Interaction("read", "Patient", "p", patient="p")) for _ in range(3)]
    await seal_into(audit, db, watcher)
    [alert] = await alerts(db, BREAK_GLASS)
    assert alert["event_id"] == first


async def test_two_processes_store_and_send_one_alert(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock, database_url: str, schema: dict[str, Any]
) -> None:
    """Process A and B share the database and take turns sealing; each sees the other's batches as a
    gap and reads them back, so both evaluate the tipping event: one row, one POST."""
    search_path = schema.get("server_settings", {}).get("search_path")
    other_db = open_database(database_url, pool_size=2, search_path=search_path)
    other = AuditLog(other_db, keys, clock, source="process-b")
    async with Receiver(200) as receiver:
        hooks = [Webhook(receiver.url(), backoff=0.01), Webhook(receiver.url(), backoff=0.01)]
        a, b = monitor(db, keys, clock, hooks[0]), monitor(other_db, keys, clock, hooks[1])
        for hook in hooks:
            hook.start()
        await reads(audit, [f"pat-{n}" for n in range(30)])
        await seal_into(audit, db, a)
        tips = await reads(other, [f"pat-{n}" for n in range(30, 60)])
        await seal_into(other, other_db, b)
        await reads(audit, ["pat-60"])
        await seal_into(audit, db, a)
        await receiver.wait_for(1)
        await asyncio.sleep(0.2)
        for hook in hooks:
            await hook.stop(grace=1)
    await other_db.close()
    [alert] = await alerts(db)
    assert alert["event_id"] == tips[20]  # the 51st distinct patient
    assert len(receiver.requests) == 1


async def test_a_restart_replays_the_window_and_remembers_its_alerts(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock
) -> None:
    await reads(audit, [f"pat-{n}" for n in range(50)])
    await seal_into(audit, db, monitor(db, keys, clock))
    tip = await reads(audit, ["pat-50"])
    await seal_into(audit, db, monitor(db, keys, clock))  # restarted: counts the 50 from before
    assert [a["event_id"] for a in await alerts(db)] == tip
    await reads(audit, ["pat-51"])
    await seal_into(audit, db, monitor(db, keys, clock))  # again: the stored alert keeps it quiet
    assert len(await alerts(db)) == 1


async def test_a_failed_evaluation_is_redone_from_the_database(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Counting(db, fail_on="INSERT INTO audit_alert")
    watcher = monitor(flaky, keys, clock)
    emergency = replace(CTX, purpose="BTG")
    [tip] = [await audit.record(emergency, Interaction("read", "Patient", "p", patient="p"))]
    await seal_into(audit, db, watcher)
    assert await alerts(db) == []
    assert "audit alert evaluation failed: ConnectionResetError" in caplog.text
    await reads(audit, ["pat-1"])
    await seal_into(audit, db, watcher)
    assert [a["event_id"] for a in await alerts(db)] == [tip]


async def test_listing_by_time_and_rule(audit: AuditLog, db: Database, keys: MemoryKeyStore,
                                        clock: FixedClock) -> None:
    watcher = monitor(db, keys, clock)
    await audit.record(replace(CTX, purpose="BTG"), Interaction("read", "Patient", "p", patient="p"))
    await reads(audit, [f"pat-{n}" for n in range(51)])
    await seal_into(audit, db, watcher)
    every = await alerts(db)
    assert [a["rule"] for a in every] == [BREAK_GLASS, MASS_ACCESS]
    assert [a["rule"] for a in await alerts(db, MASS_ACCESS)] == [MASS_ACCESS]
    assert await list_alerts(db, int(every[1]["raised_us"])) == every[1:]
    assert format_alert(every[0]).split("  ")[1:3] == [BREAK_GLASS, CTX.actor]


def test_since_is_an_iso_instant() -> None:
    assert parse_since("2026-01-01T00:00:00Z") == 1_767_225_600_000_000
    assert parse_since("2026-01-01T01:00:00.5+01:00") == 1_767_225_600_500_000
    assert parse_since("2026-01-01") == 1_767_225_600_000_000
    with pytest.raises(EhrError, match="ISO 8601"):
        parse_since("yesterday")


async def test_alerts_are_append_only(audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock,
                                      engine: AsyncEngine) -> None:
    await audit.record(replace(CTX, purpose="BTG"), Interaction("read", "Patient", "p", patient="p"))
    await seal_into(audit, db, monitor(db, keys, clock))
    for statement in ("UPDATE audit_alert SET rule = 'none'", "DELETE FROM audit_alert"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    assert len(await alerts(db)) == 1


async def test_the_sealer_hands_over_what_it_sealed(
    audit: AuditLog, db: Database, keys: MemoryKeyStore, clock: FixedClock
) -> None:
    """The integration point in ehr/audit/log.py: after each sealing commit, ``on_sealed``."""
    watcher = monitor(db, keys, clock)
    audit.on_sealed = watcher.on_sealed
    await audit.record(replace(CTX, purpose="BTG"), Interaction("read", "Patient", "p", patient="p"))
    assert await seal(audit) == 1
    await watcher.drain()
    assert [a["rule"] for a in await alerts(db)] == [BREAK_GLASS]
