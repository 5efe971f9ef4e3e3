"""The yardstick is tested too: the bare baseline stores and returns a Patient on both engines.

In-process (httpx's ASGI transport), so it runs in well under a second and never starts the load.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.benchmarks.bare import BareApp, open_patients

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}], "gender": "male"}
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@pytest.fixture
async def bare(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    patients = await open_patients(database_url)
    try:
        transport = httpx.ASGITransport(app=BareApp(patients))
        async with httpx.AsyncClient(transport=transport, base_url="https://bare.test") as client:
            yield client
    finally:
        await patients.close()


async def test_bare_app_stores_and_returns_a_patient(bare: httpx.AsyncClient) -> None:
    created = await bare.post("/fhir/Patient", content=json.dumps(PATIENT), headers=FHIR_JSON)
    read = await bare.get(created.headers["Location"], headers=FHIR_JSON)

    assert created.status_code == 201
    assert created.json() == {**PATIENT, "id": created.json()["id"]}
    assert read.status_code == 200
    assert read.headers["Content-Type"] == "application/fhir+json"
    assert read.json() == created.json()


async def test_bare_app_answers_404_for_an_unknown_patient(bare: httpx.AsyncClient) -> None:
    unknown = await bare.get("/fhir/Patient/00000000-0000-4000-8000-000000000000")
    not_an_id = await bare.get("/fhir/Patient/not-a-uuid")

    assert (unknown.status_code, not_an_id.status_code) == (404, 404)
