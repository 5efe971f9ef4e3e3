"""Transaction and batch Bundles, and PATCH, over HTTP on both engines (R4 http.html#transaction)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx

from ehr.db.database import Database
from tests.audit.helpers import count as audit_count

FHIR_JSON = {"Content-Type": "application/fhir+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MRN = "urn:oid:1.2.3"


def patient(mrn: str, family: str = "Doe") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}], "name": [{"family": family}]}


def observation(subject: str, code: str = "8867-4", **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject}, **more,
    }


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **request: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        out["resource"] = resource
        out["fullUrl"] = f"urn:uuid:{uuid.uuid4()}"
    return out


def bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def send(fhir: httpx.AsyncClient, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await fhir.post("", json=body, headers=FHIR_JSON)
    assert response.status_code == status, response.text
    result: dict[str, Any] = response.json()
    return result


async def total(fhir: httpx.AsyncClient, query: str) -> int:
    response = await fhir.get(query)
    assert response.status_code == 200, response.text
    found: int = response.json()["total"]
    return found


async def test_transaction_resolves_urn_uuid_references(fhir: httpx.AsyncClient) -> None:
    pat = entry("POST", "Patient", patient("T1"))
    obs = [entry("POST", "Observation", observation(pat["fullUrl"])) for _ in range(2)]
    result = await send(fhir, bundle("transaction", *obs, pat))
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 3
    patient_id = result["entry"][2]["resource"]["id"]
    assert result["entry"][2]["response"]["location"].startswith(f"Patient/{patient_id}/_history/1")
    for answer in result["entry"][:2]:
        assert answer["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    assert await total(fhir, f"Observation?patient={patient_id}") == 2


async def test_a_failing_entry_rolls_the_whole_transaction_back(fhir: httpx.AsyncClient, db: Database) -> None:
    before = await audit_count(db)
    pat = entry("POST", "Patient", patient("ROLLBACK"))
    bad = entry("POST", "Observation", {"resourceType": "Observation", "code": {"text": "no status"}})
    response = await fhir.post("", json=bundle("transaction", pat, bad), headers=FHIR_JSON)
    assert response.status_code == 400
    assert "entry 1" in response.json()["issue"][0]["diagnostics"]
    assert await total(fhir, f"Patient?identifier={MRN}|ROLLBACK") == 0
    assert await audit_count(db) == before + 2  # the failed transaction, and the search just now


async def test_transaction_order_conditionals_and_conditional_references(fhir: httpx.AsyncClient) -> None:
    existing = (await fhir.post("Patient", json=patient("C1"), headers=FHIR_JSON)).json()
    doomed = (await fhir.post("Patient", json=patient("GONE"), headers=FHIR_JSON)).json()
    result = await send(fhir, bundle(
        "transaction",
        entry("POST", "Patient", patient("C1", "Ignored"), ifNoneExist=f"identifier={MRN}|C1"),
        entry("POST", "Observation", observation(f"Patient?identifier={MRN}|C1")),
        entry("PUT", f"Patient?identifier={MRN}|NEW", patient("NEW", "Created")),
        entry("DELETE", f"Patient/{doomed['id']}"),
    ))
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["200 OK", "201 Created", "201 Created", "204 No Content"]
    assert result["entry"][0]["resource"]["id"] == existing["id"]
    assert result["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"
    assert (await fhir.get(f"Patient/{doomed['id']}")).status_code == 410


async def test_a_conditional_reference_matching_nothing_fails_the_transaction(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post("", json=bundle(
        "transaction",
        entry("POST", "Patient", patient("NOPE-1")),
        entry("POST", "Observation", observation(f"Patient?identifier={MRN}|NOBODY")),
    ), headers=FHIR_JSON)
    assert response.status_code == 412
    assert await total(fhir, f"Patient?identifier={MRN}|NOPE-1") == 0


async def test_two_entries_for_one_resource_are_refused(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("Patient", json=patient("TWICE"), headers=FHIR_JSON)).json()
    response = await fhir.post("", json=bundle(
        "transaction",
        entry("PUT", f"Patient/{created['id']}", {**patient("TWICE"), "id": created["id"]}),
        entry("DELETE", f"Patient/{created['id']}"),
    ), headers=FHIR_JSON)
    assert response.status_code == 400


async def test_batch_entries_succeed_or_fail_on_their_own(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("Patient", json=patient("B0"), headers=FHIR_JSON)).json()
    result = await send(fhir, bundle(
        "batch",
        entry("POST", "Patient", patient("B1")),
        entry("POST", "Patient", {"resourceType": "Patient", "bogus": True}),
        entry("GET", f"Patient/{created['id']}"),
        entry("GET", f"Patient?identifier={MRN}|B0"),
        entry("GET", "Patient/nobody"),
        entry("FETCH", "Patient"),
    ))
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "200 OK", "200 OK", "404 Not Found", "400 Bad Request"]
    assert result["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert result["entry"][2]["resource"]["id"] == created["id"]
    assert result["entry"][3]["resource"]["total"] == 1
    assert await total(fhir, f"Patient?identifier={MRN}|B1") == 1


async def test_a_transaction_audits_each_entry_and_the_bundle(fhir: httpx.AsyncClient, db: Database) -> None:
    before = await audit_count(db)
    pat = entry("POST", "Patient", patient("AUD"))
    await send(fhir, bundle("transaction", pat, entry("POST", "Observation", observation(pat["fullUrl"]))))
    assert await audit_count(db) == before + 3


async def test_patch_applies_json_patch_with_if_match(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("Patient", json=patient("P1"), headers=FHIR_JSON)).json()
    url = f"Patient/{created['id']}"
    ops = [
        {"op": "replace", "path": "/name/0/family", "value": "Patched"},
        {"op": "add", "path": "/gender", "value": "other"},
    ]
    patched = await fhir.patch(url, json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"][0]["family"] == "Patched" and patched.json()["meta"]["versionId"] == "2"
    assert (await fhir.patch(url, json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})).status_code == 412
    failed_test = [{"op": "test", "path": "/gender", "value": "male"}]
    assert (await fhir.patch(url, json=failed_test, headers=JSON_PATCH)).status_code == 422
    invalid = [{"op": "add", "path": "/gender", "value": "not-a-gender"}]
    assert (await fhir.patch(url, json=invalid, headers=JSON_PATCH)).status_code in (400, 422)
    retype = [{"op": "replace", "path": "/id", "value": "other"}]
    assert (await fhir.patch(url, json=retype, headers=JSON_PATCH)).status_code == 422
    assert (await fhir.patch(url, json=ops, headers=FHIR_JSON)).status_code == 415
    assert (await fhir.get(url)).json()["meta"]["versionId"] == "2"


async def test_patch_in_a_transaction_as_a_binary(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("Patient", json=patient("P2"), headers=FHIR_JSON)).json()
    ops = [{"op": "replace", "path": "/name/0/family", "value": "ViaBundle"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    result = await send(fhir, bundle("transaction", entry("PATCH", f"Patient/{created['id']}", binary)))
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert (await fhir.get(f"Patient/{created['id']}")).json()["name"][0]["family"] == "ViaBundle"


async def test_a_full_synthetic_record_loads_atomically(fhir: httpx.AsyncClient) -> None:
    """A Synthea-style record: one Patient, 150 Encounters, 300 Observations, 50 Conditions."""
    pat = entry("POST", "Patient", patient("SYN", "Synthetic"))
    entries = [pat]
    encounters = []
    for n in range(150):
        enc = entry("POST", "Encounter", {
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": pat["fullUrl"]},
            "period": {"start": f"20{10 + n % 14:02d}-0{1 + n % 9}-1{n % 10}T09:00:00Z"},
        })
        encounters.append(enc)
        entries.append(enc)
    for n in range(300):
        entries.append(entry("POST", "Observation", observation(
            pat["fullUrl"], "8480-6" if n % 2 else "8867-4", encounter={"reference": encounters[n // 2]["fullUrl"]},
            valueQuantity={"value": 60 + n % 80, "unit": "mm[Hg]"}, effectiveDateTime=f"2020-01-{1 + n % 28:02d}",
        )))
    for n in range(50):
        entries.append(entry("POST", "Condition", {
            "resourceType": "Condition", "subject": {"reference": pat["fullUrl"]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": str(100000 + n)}]},
        }))
    result = await send(fhir, bundle("transaction", *entries))
    assert len(result["entry"]) == 501
    patient_id = result["entry"][0]["resource"]["id"]
    assert await total(fhir, f"Observation?patient={patient_id}") == 300
    assert await total(fhir, f"Encounter?patient={patient_id}") == 150
    assert await total(fhir, f"Patient/{patient_id}/Condition") == 50
    assert await total(fhir, f"Observation?encounter:Encounter.patient={patient_id}&code=8480-6") == 150


async def test_only_transaction_and_batch_are_accepted(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post("", json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR_JSON)
    assert response.status_code == 400
    response = await fhir.post("", json=patient("X"), headers=FHIR_JSON)
    assert response.status_code == 400


async def test_fhirpath_patch_alone_and_in_a_transaction(fhir: httpx.AsyncClient) -> None:
    created = (await fhir.post("Patient", json=patient("FP"), headers=FHIR_JSON)).json()
    url = f"Patient/{created['id']}"
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.name[0].family"},
        {"name": "value", "valueString": "FhirPathed"},
    ]}]}
    patched = await fhir.patch(url, json=parameters, headers=FHIR_JSON)
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"][0]["family"] == "FhirPathed"
    assert (await fhir.patch(url, json=parameters, headers=JSON_PATCH)).status_code == 400  # not a JSON Patch
    add = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": "unknown"},
    ]}]}
    result = await send(fhir, bundle("transaction", entry("PATCH", url, add)))
    assert result["entry"][0]["response"]["status"] == "200 OK"
    assert (await fhir.get(url)).json()["gender"] == "unknown"
