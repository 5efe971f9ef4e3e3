"""Exactly one AuditEvent per interaction, success, failure and refusal alike (164.312(b))."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from ehr.api.services import Services
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.fhir.validator import validate
from ehr.pki import DevPki
from tests.audit.helpers import count, events, newest
from tests.conftest import make_client, register

PATIENT: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Zyxwvut"}], "gender": "female"}
FHIR_JSON = {"Content-Type": "application/fhir+json"}
Call = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]

# (name, call, expected status, expected subtype, expected action, expected outcome)
CASES: list[tuple[str, Call, int, str, str, str]] = [
    ("read", lambda c, i: c.get(f"Patient/{i}"), 200, "read", "R", "0"),
    ("vread", lambda c, i: c.get(f"Patient/{i}/_history/1"), 200, "vread", "R", "0"),
    ("create", lambda c, i: c.post("Patient", json=PATIENT), 201, "create", "C", "0"),
    ("update", lambda c, i: c.put(f"Patient/{i}", json={**PATIENT, "id": i}), 200, "update", "U", "0"),
    ("delete", lambda c, i: c.delete(f"Patient/{i}"), 204, "delete", "D", "0"),
    ("history-instance", lambda c, i: c.get(f"Patient/{i}/_history"), 200, "history-instance", "R", "0"),
    ("history-type", lambda c, i: c.get("Patient/_history"), 200, "history-type", "R", "0"),
    ("history-system", lambda c, i: c.get("_history"), 200, "history-system", "R", "0"),
    ("metadata", lambda c, i: c.get("metadata"), 200, "capabilities", "R", "0"),
    ("not found", lambda c, i: c.get("Patient/nobody"), 404, "read", "R", "4"),
    ("stale If-Match", lambda c, i: c.put(f"Patient/{i}", json={**PATIENT, "id": i}, headers={"If-Match": 'W/"9"'}),
     412, "update", "U", "4"),
    ("invalid resource", lambda c, i: c.post("Patient", json={"resourceType": "Patient", "x": 1}), 400,
     "create", "C", "4"),
    ("invalid JSON", lambda c, i: c.post("Patient", content=b"{", headers=FHIR_JSON), 400, "create", "C", "4"),
    ("unsupported media", lambda c, i: c.post("Patient", content=b"<x/>", headers={"Content-Type": "text/xml"}),
     415, "create", "C", "4"),
    ("not acceptable", lambda c, i: c.get(f"Patient/{i}", params={"_format": "xml"}), 406, "read", "R", "4"),
    ("unknown endpoint", lambda c, i: c.get(f"Patient/{i}/$everything/x/y"), 404, "unknown", "E", "4"),
    ("outside /fhir", lambda c, i: c.get("https://ehr.test/robots.txt"), 404, "unknown", "E", "4"),
    ("method not allowed", lambda c, i: c.request("OPTIONS", f"Patient/{i}"), 405, "unknown", "E", "4"),
    ("search", lambda c, i: c.get("Patient?gender=female"), 200, "search-type", "E", "0"),
    ("search-system", lambda c, i: c.get(f"?_id={i}"), 200, "search-system", "E", "0"),
    ("bad search", lambda c, i: c.get("Patient?shoe-size=9"), 400, "search-type", "E", "4"),
    ("patch", lambda c, i: c.patch(f"Patient/{i}", json=[{"op": "replace", "path": "/gender", "value": "male"}],
                                   headers={"Content-Type": "application/json-patch+json"}), 200, "patch", "U", "0"),
    ("conditional create",
     lambda c, i: c.post("Patient", json=PATIENT, headers={**FHIR_JSON, "If-None-Exist": f"_id={i}"}),
     200, "create", "C", "0"),
    ("conditional delete", lambda c, i: c.delete(f"Patient?_id={i}"), 204, "delete", "D", "0"),
]


@pytest.mark.parametrize(("name", "call", "status", "subtype", "action", "outcome"), CASES, ids=[c[0] for c in CASES])
async def test_exactly_one_event(
    fhir: httpx.AsyncClient, db: Database, keys: MemoryKeyStore,
    name: str, call: Call, status: int, subtype: str, action: str, outcome: str,
) -> None:
    created = (await fhir.post("Patient", json=PATIENT)).json()
    before = await count(db)
    response = await call(fhir, created["id"])
    assert response.status_code == status, response.text
    assert await count(db) == before + 1
    event = await newest(db, keys)
    assert event["subtype"][0]["code"] == subtype
    assert (event["action"], event["outcome"]) == (action, outcome)
    assert validate(event) == []  # a valid R4 AuditEvent


@pytest.mark.parametrize("scopes", ["system/Observation.rs", None], ids=["forbidden", "unregistered"])
async def test_refusals_leave_one_event(
    services: Services, pki: DevPki, db: Database, keys: MemoryKeyStore, scopes: str | None
) -> None:
    pem = pki.client_cert.read_text()
    if scopes:
        await register(services, pem, scopes)
    async with await make_client(services, pem) as client:
        before = await count(db)
        response = await client.get("Patient/anything")
    assert response.status_code == (403 if scopes else 401)
    assert await count(db) == before + 1
    event = await newest(db, keys)
    assert event["outcome"] == "4"
    assert event["outcomeDesc"].startswith(str(response.status_code))


async def test_no_certificate_leaves_one_event(services: Services, db: Database, keys: MemoryKeyStore) -> None:
    async with await make_client(services, None) as anonymous:
        response = await anonymous.get("Patient/anything")
    assert response.status_code == 401
    assert await count(db) == 1
    event = await newest(db, keys)
    assert event["subtype"][0]["code"] == "authenticate"
    assert event["agent"][0]["who"]["identifier"]["value"] == "anonymous"


async def test_read_event_is_balp_shaped(
    fhir: httpx.AsyncClient, db: Database, keys: MemoryKeyStore, services: Services
) -> None:
    created = (await fhir.post("Patient", json=PATIENT)).json()
    await fhir.get(f"Patient/{created['id']}")
    event = await newest(db, keys)
    assert event["meta"]["profile"] == ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.Read"]
    assert event["type"]["code"] == "rest"
    assert event["subtype"][0] == {"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}
    assert event["recorded"].endswith("Z")
    client, server = event["agent"]
    assert client["requestor"] is True and server["requestor"] is False
    assert client["type"]["coding"][0]["code"] == "110153"
    assert client["altId"].startswith("x5t#S256:")
    assert client["who"]["display"] == "test-client"
    assert server["type"]["coding"][0]["code"] == "110152"
    assert event["source"]["observer"]["display"] == services.base
    patient = [e for e in event["entity"] if e["type"]["code"] == "1"]
    assert patient[0]["what"]["reference"] == f"Patient/{created['id']}"
    assert "Zyxwvut" not in str(event)  # references only, never the resource's content


async def test_write_events_name_the_version(fhir: httpx.AsyncClient, db: Database, keys: MemoryKeyStore) -> None:
    response = await fhir.post("Observation", json={"resourceType": "Observation", "status": "final",
                                                    "code": {"text": "x"}})
    event = await newest(db, keys)
    references = [e["what"]["reference"] for e in event.get("entity", []) if "what" in e]
    assert references == [f"Observation/{response.json()['id']}/_history/1"]


async def test_history_event_carries_the_query(fhir: httpx.AsyncClient, db: Database, keys: MemoryKeyStore) -> None:
    await fhir.get("_history", params={"_count": "2"})
    event = await newest(db, keys)
    query = [e for e in event["entity"] if e["role"]["code"] == "24"]
    assert query and query[0]["query"] == "X2NvdW50PTI="  # base64 of "_count=2"


async def test_all_events_validate(fhir: httpx.AsyncClient, db: Database, keys: MemoryKeyStore) -> None:
    created = (await fhir.post("Patient", json=PATIENT)).json()
    await fhir.get(f"Patient/{created['id']}")
    await fhir.delete(f"Patient/{created['id']}")
    await fhir.get(f"Patient/{created['id']}")
    for event in await events(db, keys):
        assert validate(event) == [], event["subtype"]
