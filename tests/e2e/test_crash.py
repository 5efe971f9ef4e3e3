"""SIGKILL in the middle of a write load: everything acknowledged is stored and audited, and both
the store and the audit log verify afterwards (invariant 7: nothing acknowledged is lost)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ehr.db.database import open_database
from tests.e2e.server import client_context, ehr, serve_process

PATIENT = {"resourceType": "Patient", "name": [{"family": "Crash"}]}


def test_sigkill_during_writes_loses_nothing_acknowledged(home: Path, server_database: str) -> None:
    with serve_process(home, server_database) as (process, base):
        acknowledged = asyncio.run(_load_then_kill(base, home, process))
    assert process.returncode == -signal.SIGKILL
    assert len(acknowledged) > 20, "the load should have been going when the server died"

    store = ehr(home, "verify", database_url=server_database)
    assert store.returncode == 0, store.stdout
    audit = ehr(home, "audit", "verify", database_url=server_database)
    assert audit.returncode == 0, audit.stdout
    missing = asyncio.run(_unaudited(server_database, home, acknowledged))
    assert missing == set(), f"{len(missing)} acknowledged creates have no stored version or no AuditEvent"


async def _load_then_kill(base: str, home: Path, process: subprocess.Popen[bytes]) -> set[str]:
    acknowledged: set[str] = set()
    stop = time.monotonic() + 1.5

    async def writer(client: httpx.AsyncClient) -> None:
        while True:
            try:
                response = await client.post("Patient", json=PATIENT)
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 201:
                acknowledged.add(response.json()["id"])
            if time.monotonic() > stop and process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)

    async with httpx.AsyncClient(base_url=base + "/", verify=client_context(home), timeout=10) as client:
        await asyncio.gather(*(writer(client) for _ in range(8)))
    return acknowledged


async def _unaudited(database_url: str, home: Path, ids: set[str]) -> set[str]:
    db = open_database(database_url, pool_size=2)
    try:
        versions = {r["res_id"] for r in await db.fetch_all("SELECT res_id FROM resource_version")}
        audited = {
            r["entity_id"]
            for r in await db.fetch_all("SELECT entity_id FROM audit_event WHERE subtype = 'create' AND outcome = '0'")
        }
    finally:
        await db.close()
    return {i for i in ids if i not in versions or i not in audited}
