"""Reviewing the audit log over FHIR (HIPAA 164.312(b)): AuditEvent search parameter by parameter
against events placed at known times, read, who may review, and that reviewing is itself audited.

The scenario (FixedClock set before each request; a write reads the clock for its version first,
then for its event, so its event lands 1 ms after the time set):

    label      what                          event recorded at (UTC)        patient  outcome
    addW       operator registers worker     2025-01-01T00:00:00.000        -        0
    addR       operator registers reviewer   2025-01-01T00:00:00.001        -        0
    createA    worker creates Patient A      2025-12-31T23:59:59.001        A        0
    readA      worker reads Patient A        2026-01-01T00:00:00.000        A        0
    createB    worker creates Patient B      2026-11-23T10:00:00.001        B        0
    readB      worker reads Patient B        2026-11-23T23:59:59.999        B        0
    updateA    worker updates Patient A      2026-11-24T00:00:00.001        A        0
    deleteB    worker deletes Patient B      2026-12-15T12:00:00.001        B        0
    read404    worker reads Patient/nobody   2027-01-01T00:00:00.000        -        4
    createObs  worker creates Observation    2027-02-01T00:00:00.001        -        0
    historyA   worker reads A's history      2027-02-02T00:00:00.000        A        0

Reviews happen from 2030 on, so they never fall in the scenario's dates.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.api.services import Services
from ehr.context import operator_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database
from ehr.fhir.validator import validate
from ehr.pki import DevPki, issue_certificate
from tests.audit.helpers import count, events, newest
from tests.audit.test_tamper_evidence import _tamper as tamper
from tests.conftest import FixedClock, make_client, register

PATIENT: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Qwertzuiop"}], "gender": "female"}
OBSERVATION: dict[str, Any] = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
LABELS = ["addW", "addR", "createA", "readA", "createB", "readB", "updateA", "deleteB", "read404", "createObs",
          "historyA"]
ALL = LABELS[::-1]  # newest first


def us(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * 1_000_000 + int(iso[20:23] or 0) * 1000


def at(clock: FixedClock, iso: str) -> None:
    """The clock's next reading is ``iso`` (whole milliseconds, UTC)."""
    clock.now = us(iso) - 1000


def issue_pem(pki: DevPki, name: str) -> str:
    """Another client certificate from the dev CA (one per name, kept for the session)."""
    cert = pki.directory / f"{name}.pem"
    if not cert.exists():
        issue_certificate(pki.ca_cert, pki.ca_key, name, cert, pki.directory / f"{name}-key.pem")
    return cert.read_text()


@dataclass
class Scenario:
    worker: httpx.AsyncClient
    reviewer: httpx.AsyncClient
    ids: dict[str, str]                                  # A, B, obs, W, R, op, and every label
    label: dict[str, str] = field(default_factory=dict)  # event id -> label

    async def search(self, params: list[tuple[str, str]], client: httpx.AsyncClient | None = None) -> list[str]:
        """The labels of what an AuditEvent search returns, newest first (one page)."""
        response = await (client or self.reviewer).get("AuditEvent", params=tuple(params))
        assert response.status_code == 200, response.text
        bundle = response.json()
        found = [self.label.get(e["resource"]["id"], "review") for e in bundle.get("entry", [])]
        assert bundle["total"] == len(found)
        return found


@asynccontextmanager
async def scenario_of(services: Services, pki: DevPki, clock: FixedClock) -> AsyncIterator[Scenario]:
    at(clock, "2025-01-01T00:00:00.000Z")
    worker_pem, reviewer_pem = pki.client_cert.read_text(), issue_pem(pki, "reviewer")
    ids = {"W": await register(services, worker_pem, "system/*.cruds", "worker"),
           "R": await register(services, reviewer_pem, "system/AuditEvent.rs", "reviewer"),
           "op": operator_context().actor}
    async with await make_client(services, worker_pem) as worker, await make_client(services, reviewer_pem) as rev:
        steps: list[tuple[str, Any]] = [
            ("2025-12-31T23:59:59.000Z", lambda: worker.post("Patient", json=PATIENT)),
            ("2026-01-01T00:00:00.000Z", lambda: worker.get(f"Patient/{ids['A']}")),
            ("2026-11-23T10:00:00.000Z", lambda: worker.post("Patient", json=PATIENT)),
            ("2026-11-23T23:59:59.999Z", lambda: worker.get(f"Patient/{ids['B']}")),
            ("2026-11-24T00:00:00.000Z", lambda: worker.put(f"Patient/{ids['A']}", json={**PATIENT, "id": ids["A"]})),
            ("2026-12-15T12:00:00.000Z", lambda: worker.delete(f"Patient/{ids['B']}")),
            ("2027-01-01T00:00:00.000Z", lambda: worker.get("Patient/nobody")),
            ("2027-02-01T00:00:00.000Z", lambda: worker.post("Observation", json=OBSERVATION)),
            ("2027-02-02T00:00:00.000Z", lambda: worker.get(f"Patient/{ids['A']}/_history")),
        ]
        for n, (when, call) in enumerate(steps):
            at(clock, when)
            response = await call()
            assert response.status_code < 300 or n == 6, response.text
            if response.status_code == 201:
                ids[{0: "A", 2: "B", 7: "obs"}[n]] = response.json()["id"]
        at(clock, "2030-01-01T00:00:00.000Z")
        logged = await events(services.db, services.keys)
        assert len(logged) == len(LABELS)
        scenario = Scenario(worker, rev, ids, {e["id"]: name for e, name in zip(logged, LABELS, strict=True)})
        ids.update({name: e["id"] for e, name in zip(logged, LABELS, strict=True)})
        assert logged[LABELS.index("readB")]["recorded"] == "2026-11-23T23:59:59.999000Z"
        yield scenario


@pytest.fixture
async def scenario(services: Services, pki: DevPki, clock: FixedClock) -> AsyncIterator[Scenario]:
    async with scenario_of(services, pki, clock) as built:
        yield built


A_EVENTS = ["historyA", "updateA", "readA", "createA"]
B_EVENTS = ["deleteB", "readB", "createB"]
WORKER = [label for label in ALL if label not in ("addW", "addR")]
# (id, parameters with {placeholders} from Scenario.ids, the labels expected, newest first)
CASES: list[tuple[str, list[tuple[str, str]], list[str]]] = [
    ("none", [], ALL),
    ("patient id", [("patient", "{A}")], A_EVENTS),
    ("patient reference", [("patient", "Patient/{B}")], B_EVENTS),
    ("patient absolute reference", [("patient", "https://ehr.test/fhir/Patient/{B}")], B_EVENTS),
    ("patient OR", [("patient", "{A},{B}")], ["historyA", "deleteB", "updateA", "readB", "createB", "readA",
                                              "createA"]),
    ("patient AND", [("patient", "{A}"), ("patient", "{B}")], []),
    ("patient unknown", [("patient", "nobody")], []),
    ("agent id", [("agent", "{W}")], WORKER),
    ("agent Device reference", [("agent", "Device/{W}")], WORKER),
    ("agent Practitioner reference", [("agent", "Practitioner/{R}")], []),
    ("agent operator", [("agent", "{op}")], ["addR", "addW"]),
    ("date year", [("date", "2026")], ["deleteB", "updateA", "readB", "createB", "readA"]),
    ("date month", [("date", "2026-11")], ["updateA", "readB", "createB"]),
    ("date day", [("date", "2026-11-23")], ["readB", "createB"]),
    ("date eq day", [("date", "eq2026-11-23")], ["readB", "createB"]),
    ("date ne day", [("date", "ne2026-11-23")], [x for x in ALL if x not in ("readB", "createB")]),
    ("date lt day", [("date", "lt2026-01-01")], ["createA", "addR", "addW"]),
    ("date le day", [("date", "le2026-01-01")], ["readA", "createA", "addR", "addW"]),
    ("date gt day", [("date", "gt2026-11-23")], ["historyA", "createObs", "read404", "deleteB", "updateA"]),
    ("date ge day", [("date", "ge2026-11-23")], ["historyA", "createObs", "read404", "deleteB", "updateA", "readB",
                                                 "createB"]),
    ("date sa day", [("date", "sa2026-11-23")], ["historyA", "createObs", "read404", "deleteB", "updateA"]),
    ("date eb year", [("date", "eb2026")], ["createA", "addR", "addW"]),
    ("date second", [("date", "2026-01-01T00:00:00Z")], ["readA"]),
    ("date minute", [("date", "2026-11-23T10:00Z")], ["createB"]),
    ("date millisecond", [("date", "2026-11-23T23:59:59.999Z")], ["readB"]),
    ("date millisecond before", [("date", "2026-11-23T23:59:59.998Z")], []),
    ("date microsecond", [("date", "2026-11-24T00:00:00.001000Z")], ["updateA"]),
    ("date time zone", [("date", "2026-11-24T01:00:00+01:00")], ["updateA"]),
    ("date lt instant", [("date", "lt2026-01-01T00:00:00.000000Z")], ["createA", "addR", "addW"]),
    ("date le instant", [("date", "le2026-01-01T00:00:00.000000Z")], ["readA", "createA", "addR", "addW"]),
    ("date gt instant", [("date", "gt2027-01-01T00:00:00.000000Z")], ["historyA", "createObs"]),
    ("date ge instant", [("date", "ge2027-01-01T00:00:00.000000Z")], ["historyA", "createObs", "read404"]),
    ("date AND", [("date", "ge2026-11"), ("date", "lt2026-12")], ["updateA", "readB", "createB"]),
    ("date OR", [("date", "lt2026,gt2027-01-15")], ["historyA", "createObs", "createA", "addR", "addW"]),
    ("action R", [("action", "R")], ["historyA", "read404", "readB", "readA"]),
    ("action C", [("action", "C")], ["createObs", "createB", "createA"]),
    ("action U", [("action", "U")], ["updateA"]),
    ("action D", [("action", "D")], ["deleteB"]),
    ("action E", [("action", "E")], ["addR", "addW"]),
    ("action OR", [("action", "C,D")], ["createObs", "deleteB", "createB", "createA"]),
    ("action system", [("action", "http://hl7.org/fhir/audit-event-action|U")], ["updateA"]),
    ("action other system", [("action", "http://example.org|U")], []),
    ("outcome 4", [("outcome", "4")], ["read404"]),
    ("outcome 0", [("outcome", "0")], [x for x in ALL if x != "read404"]),
    ("outcome 8", [("outcome", "8")], []),
    ("outcome system", [("outcome", "http://hl7.org/fhir/audit-event-outcome|4")], ["read404"]),
    ("entity Patient", [("entity", "Patient/{A}")], A_EVENTS),
    ("entity unknown Patient", [("entity", "Patient/nobody")], ["read404"]),
    ("entity Observation", [("entity", "Observation/{obs}")], ["createObs"]),
    ("entity version", [("entity", "Observation/{obs}/_history/1")], ["createObs"]),
    ("entity plain id", [("entity", "{obs}")], ["createObs"]),
    ("entity wrong type", [("entity", "Condition/{obs}")], []),
    ("subtype code", [("subtype", "read")], ["read404", "readB", "readA"]),
    ("subtype OR", [("subtype", "history-instance,delete")], ["historyA", "deleteB"]),
    ("subtype system", [("subtype", "http://hl7.org/fhir/restful-interaction|create")],
     ["createObs", "createB", "createA"]),
    ("subtype other system", [("subtype", "urn:ehr:audit-subtype|client-add")], ["addR", "addW"]),
    ("subtype wrong system", [("subtype", "http://hl7.org/fhir/restful-interaction|client-add")], []),
    ("subtype no system", [("subtype", "|read")], []),
    ("subtype any REST", [("subtype", "http://hl7.org/fhir/restful-interaction|")], WORKER),
    ("subtype any other", [("subtype", "urn:ehr:audit-subtype|")], ["addR", "addW"]),
    ("address", [("address", "127.0.0.1")], WORKER),
    ("address unknown", [("address", "10.0.0.1")], []),
    ("_id", [("_id", "{readA}")], ["readA"]),
    ("AND of parameters", [("patient", "{A}"), ("action", "R")], ["historyA", "readA"]),
    ("AND across columns", [("agent", "{W}"), ("outcome", "4"), ("date", "2027")], ["read404"]),
    ("empty value ignored", [("patient", "")], ALL),
    ("control parameters", [("_sort", "-date"), ("_total", "accurate"), ("_format", "json")], ALL),
]


@pytest.mark.parametrize(("params", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_search_parameter(scenario: Scenario, params: list[tuple[str, str]], expected: list[str]) -> None:
    filled = [(name, value.format(**scenario.ids)) for name, value in params]
    assert await scenario.search(filled) == expected


async def test_searchset_bundle(scenario: Scenario, services: Services) -> None:
    response = await scenario.reviewer.get("AuditEvent", params={"patient": scenario.ids["A"]})
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert (bundle["resourceType"], bundle["type"], bundle["total"]) == ("Bundle", "searchset", 4)
    assert bundle["link"] == [{"relation": "self",
                               "url": f"{services.base}/AuditEvent?patient={scenario.ids['A']}&_count=50"}]
    logged = {e["id"]: e for e in await events(services.db, services.keys)}
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == f"{services.base}/AuditEvent/{entry['resource']['id']}"
        assert entry["search"] == {"mode": "match"}
        assert entry["resource"] == logged[entry["resource"]["id"]]
    assert validate(bundle) == []


async def test_read_returns_the_sealed_event(scenario: Scenario, services: Services) -> None:
    logged = {e["id"]: e for e in await events(services.db, services.keys)}
    response = await scenario.reviewer.get(f"AuditEvent/{scenario.ids['createB']}")
    assert response.status_code == 200
    assert response.json() == logged[scenario.ids["createB"]]
    missing = await scenario.reviewer.get("AuditEvent/no-such-event")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"


@pytest.mark.parametrize("scopes", ["system/*.rs", "system/AuditEvent.read", "system/*.cruds"])
async def test_who_may_review(services: Services, pki: DevPki, scopes: str) -> None:
    pem = issue_pem(pki, "auditor")
    await register(services, pem, scopes, "auditor")
    async with await make_client(services, pem) as auditor:
        assert (await auditor.get("AuditEvent")).status_code == 200


@pytest.mark.parametrize("scopes", ["system/Patient.cruds", "system/AuditEvent.r", "system/AuditEvent.s",
                                    "system/AuditEvent.rs?agent=x"])
@pytest.mark.parametrize("path", ["AuditEvent", "AuditEvent/x", "Patient/x/$access-log"])
async def test_review_refused_and_audited(
    services: Services, pki: DevPki, db: Database, keys: MemoryKeyStore, scopes: str, path: str
) -> None:
    pem = issue_pem(pki, "clinician")
    await register(services, pem, scopes, "clinician")
    async with await make_client(services, pem) as clinician:
        before = await count(db)
        response = await clinician.get(path, params={"date": "2026"})
    if path == "AuditEvent/x" and scopes == "system/AuditEvent.r":
        assert response.status_code == 404  # a read needs only r
        return
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert await count(db) == before + 1
    event = await newest(db, keys)
    assert (event["outcome"], event["outcomeDesc"][:3]) == ("4", "403")


WRITES = [
    ("post", "AuditEvent", "create"),
    ("put", "AuditEvent/{readA}", "update"),
    ("patch", "AuditEvent/{readA}", "patch"),
    ("delete", "AuditEvent/{readA}", "delete"),
    ("get", "AuditEvent/_history", "history-type"),
    ("get", "AuditEvent/{readA}/_history", "history-instance"),
    ("get", "AuditEvent/{readA}/_history/1", "vread"),
]


@pytest.mark.parametrize(("method", "path", "subtype"), WRITES, ids=[w[2] for w in WRITES])
async def test_the_log_cannot_be_changed(
    scenario: Scenario, services: Services, db: Database, keys: MemoryKeyStore, method: str, path: str, subtype: str
) -> None:
    """Even a client with every right (system/*.cruds) gets 405, and the attempt is recorded."""
    url = path.format(**scenario.ids)
    body = {"resourceType": "AuditEvent", "id": scenario.ids["readA"]}
    kwargs: dict[str, Any] = {"json": body} if method in ("post", "put", "patch") else {}
    before = await count(db)
    response = await scenario.worker.request(method.upper(), url, **kwargs)
    assert response.status_code == 405, response.text
    assert response.json()["issue"][0]["code"] == "not-supported"
    assert await count(db) == before + 1
    event = await newest(db, keys)
    assert (event["subtype"][0]["code"], event["outcome"]) == (subtype, "4")
    versions = await db.fetch_one("SELECT count(*) AS n FROM resource_version WHERE res_type = 'AuditEvent'")
    assert versions is not None and versions["n"] == 0
    assert (await scenario.search([("_id", scenario.ids["readA"])])) == ["readA"]  # unchanged


REVIEWS = [
    ("search", "AuditEvent", {"patient": "{A}", "_count": "2"}, 200, "search-type", "AuditEvent", None),
    ("read", "AuditEvent/{createA}", {}, 200, "read", "AuditEvent", "{A}"),
    ("read missing", "AuditEvent/nothing", {}, 404, "read", "AuditEvent", None),
    ("access-log", "Patient/{A}/$access-log", {"start": "2026"}, 200, "operation", "Patient", "{A}"),
    ("bad parameter", "AuditEvent", {"date": "2026-13"}, 400, "search-type", "AuditEvent", None),
    ("bad access-log", "Patient/{A}/$access-log", {"end": "soon"}, 400, "operation", "Patient", "{A}"),
    ("not acceptable", "AuditEvent", {"_format": "xml"}, 406, "search-type", None, None),
]


@pytest.mark.parametrize(("path", "params", "status", "subtype", "entity_type", "patient"),
                         [r[1:] for r in REVIEWS], ids=[r[0] for r in REVIEWS])
async def test_each_review_leaves_one_event(
    scenario: Scenario, db: Database, keys: MemoryKeyStore, path: str, params: dict[str, str], status: int,
    subtype: str, entity_type: str | None, patient: str | None,
) -> None:
    filled = {name: value.format(**scenario.ids) for name, value in params.items()}
    before = await count(db)
    response = await scenario.reviewer.get(path.format(**scenario.ids), params=filled)
    assert response.status_code == status, response.text
    assert await count(db) == before + 1
    event = await newest(db, keys)
    assert event["subtype"][0]["code"] == subtype
    assert event["outcome"] == ("0" if status == 200 else "4")
    assert event["agent"][0]["who"]["identifier"]["value"] == scenario.ids["R"]
    row = await db.fetch_one("SELECT entity_type, patient FROM audit_event WHERE id = $1", event["id"])
    assert row is not None
    assert (row["entity_type"], row["patient"]) == (entity_type, patient.format(**scenario.ids) if patient else None)
    queries = [e["query"] for e in event.get("entity", []) if "query" in e]
    if filled and status != 406:
        assert base64.b64decode(queries[0]).decode() == httpx.QueryParams(filled).__str__()
    assert validate(event) == []


BAD = [
    ("date", "2026-13-01"), ("date", "2026-02-30"), ("date", "ap2026"), ("date", "xx2026"),
    ("date", "2026-11-23T10:00:00"), ("date", "2026-11-23T25:00:00Z"), ("date", "2026-11-23T10:00:00+15:00"),
    ("date", "26"), ("patient", "Practitioner/x"), ("patient", "a/b/c/"), ("action", "Q"), ("outcome", "3"),
    ("_count", "-1"), ("_count", "ten"), ("_cursor", "garbage"), ("_cursor", "WzEsICJ4Il0"), ("_sort", "date"),
    ("_total", "maybe"), ("patient:missing", "true"), ("date:exact", "2026"), ("foo", "bar"),
    ("subtype", "a|b|c"),
]


@pytest.mark.parametrize(("name", "value"), BAD, ids=[f"{n}={v}" for n, v in BAD])
async def test_bad_parameter_is_400_without_the_value(scenario: Scenario, name: str, value: str) -> None:
    secret = "Qwertzuiop"  # as if a patient's name had been typed into the value
    response = await scenario.reviewer.get("AuditEvent", params=[(name, value + secret)])
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "invalid"
    assert secret not in response.text


async def test_lenient_handling_ignores_unknown_parameters(scenario: Scenario, services: Services) -> None:
    params = [("foo", "bar"), ("patient", scenario.ids["B"]), ("_elements", "id")]
    strict = await scenario.reviewer.get("AuditEvent", params=tuple(params))
    assert strict.status_code == 400
    assert "'foo'" in strict.json()["issue"][0]["diagnostics"]
    lenient = await scenario.reviewer.get("AuditEvent", params=tuple(params), headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    bundle = lenient.json()
    assert [scenario.label[e["resource"]["id"]] for e in bundle["entry"]] == B_EVENTS
    assert bundle["link"][0]["url"] == f"{services.base}/AuditEvent?patient={scenario.ids['B']}&_count=50"
    modifier = await scenario.reviewer.get("AuditEvent", params={"patient:missing": "true"},
                                           headers={"Prefer": "handling=lenient"})
    assert modifier.status_code == 400  # unsupported modifiers are refused whatever the handling


async def test_review_sees_reviews(scenario: Scenario) -> None:
    """Reviewing is itself in the log: a reviewer's searches show up for the next reviewer."""
    await scenario.search([("patient", scenario.ids["A"])])
    found = await scenario.search([("agent", scenario.ids["R"])])
    assert found == ["review"]


async def test_a_tampered_event_is_not_served(scenario: Scenario, engine: AsyncEngine, db: Database) -> None:
    """An event whose sealed body no longer opens fails the review loudly (500), never silently."""
    moved = f"(SELECT ciphertext FROM audit_event WHERE id = '{scenario.ids['readB']}')"
    await tamper(engine, f"UPDATE audit_event SET ciphertext = {moved} WHERE id = '{scenario.ids['readA']}'")
    paths = ("AuditEvent", f"AuditEvent/{scenario.ids['readA']}", f"Patient/{scenario.ids['A']}/$access-log")
    for n, path in enumerate(paths):
        response = await scenario.reviewer.get(path)
        assert response.status_code == 500, path
        assert "ehr audit verify" in response.json()["issue"][0]["diagnostics"]
        row = await db.fetch_one("SELECT * FROM audit_event ORDER BY seq DESC LIMIT 1")
        assert row is not None and (row["outcome"], row["subtype"]) == ("8", ("search-type", "read", "operation")[n])
    assert await scenario.search([("patient", scenario.ids["B"])]) == B_EVENTS  # the rest is still reviewable
