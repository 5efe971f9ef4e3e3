"""Three server processes on one PostgreSQL: racing writes lose nothing and duplicate nothing."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import client_context, ehr, running_server

PATIENT = {"resourceType": "Patient", "name": [{"family": "Scale"}]}


@pytest.mark.parametrize("engine_kind", ["postgresql"])
def test_three_servers_one_database(home: Path, server_database: str) -> None:
    with ExitStack() as stack:
        bases = [stack.enter_context(running_server(home, server_database)) for _ in range(3)]
        outcome = asyncio.run(_race(home, bases))
    assert outcome["if_match_winners"] == 1, outcome
    assert outcome["creates"] == 60
    verified = ehr(home, "verify", database_url=server_database)
    assert verified.returncode == 0, verified.stdout
    # 60 creates, and the contested resource: 1 create + 1 winning If-Match update + 30 plain updates
    assert "OK: 92 versions of 61 resources" in verified.stdout, verified.stdout


async def _race(home: Path, bases: list[str]) -> dict[str, int]:
    context = client_context(home)
    clients = [httpx.AsyncClient(base_url=b + "/", verify=context, timeout=60) for b in bases]
    try:
        first = await clients[0].put("Patient/contested", json={**PATIENT, "id": "contested"})
        assert first.status_code == 201
        body = {**PATIENT, "id": "contested"}
        contested = [c.put("Patient/contested", json=body, headers={"If-Match": 'W/"1"'}) for c in clients * 3]
        results = await asyncio.gather(*contested)
        assert {r.status_code for r in results} <= {200, 412}, [r.text for r in results]
        winners = sum(r.status_code == 200 for r in results)
        plain = [c.put("Patient/contested", json=body) for c in clients * 10]
        creates = [c.post("Patient", json=PATIENT) for c in clients * 20]
        done = await asyncio.gather(*plain, *creates)
        assert all(r.status_code in (200, 201) for r in done), [r.text for r in done if r.status_code >= 300]
        history = (await clients[1].get("Patient/contested/_history", params={"_count": 100})).json()
        versions = [int(e["response"]["etag"][3:-1]) for e in history["entry"]]
        assert versions == list(range(32, 0, -1))
        created_ids = {r.json()["id"] for r in done[len(plain):]}
        return {"if_match_winners": winners, "creates": len(created_ids)}
    finally:
        for client in clients:
            await client.aclose()


def test_serve_with_two_workers(home: Path, server_database: str) -> None:
    with running_server(home, server_database, workers=2) as base:
        with httpx.Client(base_url=base + "/", verify=client_context(home)) as fhir:
            ids = [fhir.post("Patient", json=PATIENT).json()["id"] for _ in range(10)]
            assert all(fhir.get(f"Patient/{rid}").status_code == 200 for rid in ids)
    verified = ehr(home, "verify", database_url=server_database)
    assert verified.returncode == 0, verified.stdout
    assert "OK: 10 versions of 10 resources" in verified.stdout
