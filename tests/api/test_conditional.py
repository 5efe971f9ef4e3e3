"""Conditional create, update and delete (R4 http.html): the none / one / several outcomes, and
racing conditional creates with the same criteria making exactly one resource, on both engines."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}
MRN = "urn:oid:1.2.3"


def patient(mrn: str, family: str = "Doe") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}], "name": [{"family": family}]}


async def count(fhir: httpx.AsyncClient, query: str) -> int:
    response = await fhir.get(f"Patient?{query}")
    assert response.status_code == 200
    total: int = response.json()["total"]
    return total


async def test_if_none_exist_creates_once_then_returns_the_match(fhir: httpx.AsyncClient) -> None:
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={MRN}|A1"}
    first = await fhir.post("Patient", json=patient("A1"), headers=headers)
    assert first.status_code == 201
    again = await fhir.post("Patient", json=patient("A1", "Other"), headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["name"] == [{"family": "Doe"}]
    assert await count(fhir, f"identifier={MRN}|A1") == 1


async def test_if_none_exist_with_several_matches_is_412(fhir: httpx.AsyncClient) -> None:
    for _ in range(2):
        assert (await fhir.post("Patient", json=patient("DUP"), headers=FHIR_JSON)).status_code == 201
    response = await fhir.post("Patient", json=patient("DUP"), headers={**FHIR_JSON, "If-None-Exist": "identifier=DUP"})
    assert response.status_code == 412
    assert response.json()["resourceType"] == "OperationOutcome"
    assert await count(fhir, "identifier=DUP") == 2


async def test_if_none_exist_with_unknown_parameter_is_refused(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post("Patient", json=patient("X"), headers={**FHIR_JSON, "If-None-Exist": "shoe=9"})
    assert response.status_code == 400
    assert await count(fhir, "identifier=X") == 0


async def test_racing_conditional_creates_make_exactly_one_resource(fhir: httpx.AsyncClient) -> None:
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={MRN}|RACE"}
    responses = await asyncio.gather(
        *(fhir.post("Patient", json=patient("RACE"), headers=headers) for _ in range(12))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count(fhir, f"identifier={MRN}|RACE") == 1


async def test_conditional_update_none_one_several(fhir: httpx.AsyncClient) -> None:
    created = await fhir.put(f"Patient?identifier={MRN}|U1", json=patient("U1"), headers=FHIR_JSON)
    assert created.status_code == 201
    updated = await fhir.put(f"Patient?identifier={MRN}|U1", json=patient("U1", "Roe"), headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"] and updated.json()["meta"]["versionId"] == "2"
    wrong_id = await fhir.put(
        f"Patient?identifier={MRN}|U1", json={**patient("U1"), "id": "someone-else"}, headers=FHIR_JSON
    )
    assert wrong_id.status_code == 400
    await fhir.post("Patient", json=patient("U1"), headers=FHIR_JSON)
    several = await fhir.put(f"Patient?identifier={MRN}|U1", json=patient("U1"), headers=FHIR_JSON)
    assert several.status_code == 412


async def test_conditional_update_honours_if_match(fhir: httpx.AsyncClient) -> None:
    await fhir.put(f"Patient?identifier={MRN}|M1", json=patient("M1"), headers=FHIR_JSON)
    stale = await fhir.put(
        f"Patient?identifier={MRN}|M1", json=patient("M1"), headers={**FHIR_JSON, "If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412


async def test_conditional_delete_none_one_several(fhir: httpx.AsyncClient) -> None:
    nothing = await fhir.delete(f"Patient?identifier={MRN}|D0")
    assert nothing.status_code == 204
    await fhir.post("Patient", json=patient("D1"), headers=FHIR_JSON)
    one = await fhir.delete(f"Patient?identifier={MRN}|D1")
    assert one.status_code == 204 and one.headers["etag"] == 'W/"2"'
    assert await count(fhir, f"identifier={MRN}|D1") == 0
    for _ in range(2):
        await fhir.post("Patient", json=patient("D2"), headers=FHIR_JSON)
    several = await fhir.delete(f"Patient?identifier={MRN}|D2")
    assert several.status_code == 412
    assert await count(fhir, f"identifier={MRN}|D2") == 2


async def test_conditional_without_criteria_is_refused(fhir: httpx.AsyncClient) -> None:
    assert (await fhir.delete("Patient")).status_code == 412
    assert (await fhir.put("Patient", json=patient("Z"), headers=FHIR_JSON)).status_code == 412
    assert (await fhir.delete("Patient?_count=1")).status_code == 400
