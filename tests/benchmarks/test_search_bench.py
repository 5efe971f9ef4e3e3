"""The search benchmark's own parts, at a small scale: the record set and its expected answers, the bare
baseline's search on both engines, the answer checks against the real server's answers, the report.

In-process (httpx's ASGI transport), so it runs in seconds and never starts the load.
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from tests.benchmarks import report
from tests.benchmarks.bare import BareApp, open_patients
from tests.benchmarks.bare_search import add_patients
from tests.benchmarks.dataset import OBSERVATIONS_PER_PATIENT, Dataset, Query, families
from tests.benchmarks.importer import Import, transaction_check
from tests.benchmarks.load import LoadResult, checked
from tests.benchmarks.search_bench import full_check, quick_check, searches
from tests.benchmarks.servers import asyncpg_dsn

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def test_the_record_set_is_deterministic_with_unique_mrns_and_ten_observations_each() -> None:
    dataset = Dataset.generate(200)

    assert dataset == Dataset.generate(200)
    assert len({p.mrn for p in dataset.patients}) == 200
    assert {len(p.observations) for p in dataset.patients} == {OBSERVATIONS_PER_PATIENT}
    assert dataset.resources == 200 * (1 + OBSERVATIONS_PER_PATIENT)
    years = Counter(o.when[:4] for p in dataset.patients for o in p.observations)
    assert min(years) == "2010" and max(years) == "2025"


def test_family_names_find_a_handful_of_patients_at_every_scale() -> None:
    assert len(families()) >= 500
    assert not [f for f in families() if "chalmers".startswith(f.lower())]  # the create load's patients
    for patients in (1_000, 10_000):
        totals = sorted(q.total for q in Dataset.generate(patients).family_queries())
        assert 10 <= totals[len(totals) // 2] <= 30
        assert totals[0] >= 5


def test_expected_answers_follow_r4_search_semantics() -> None:
    dataset = Dataset.generate(100)
    for query in dataset.family_queries():
        family = query.path.rsplit("=", 1)[1].lower()
        assert query.total == sum(p.family.lower().startswith(family) for p in dataset.patients)
    ids = [f"p{n}" for n in range(100)]
    for query in dataset.observation_queries(ids, 50, include=True):
        params = dict(pair.split("=", 1) for pair in query.path.split("?", 1)[1].split("&"))
        patient = dataset.patients[ids.index(params["patient"])]
        code = params["code"].rsplit("%7C", 1)[1]
        day = params["date"].removeprefix("ge")
        assert query.total >= 1 and query.included == 1
        assert query.total == sum(
            o.when >= f"{day}T00:00:00Z" and o.resource("x")["code"]["coding"][0]["code"] == code
            for o in patient.observations
        )


def test_transaction_bundles_refer_to_their_patients_by_urn_uuid() -> None:
    dataset = Dataset.generate(25)
    bundles = list(dataset.transaction_bundles(10))

    assert [len(held) for held, _ in bundles] == [10, 10, 5]
    bundle = json.loads(bundles[0][1])
    assert bundle["type"] == "transaction" and len(bundle["entry"]) == 10 * (1 + OBSERVATIONS_PER_PATIENT)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    assert len(full_urls) == len(bundle["entry"]) and all(u.startswith("urn:uuid:") for u in full_urls)
    for entry in bundle["entry"]:
        assert entry["request"] == {"method": "POST", "url": entry["resource"]["resourceType"]}
        if entry["resource"]["resourceType"] == "Observation":
            assert entry["resource"]["subject"]["reference"] in full_urls


def test_transaction_check_reads_a_transaction_response_and_keeps_the_patient_ids() -> None:
    dataset = Dataset.generate(2)
    ids: list[str | None] = [None, None]
    entries = []
    for n, patient in enumerate(dataset.patients):
        entries.append({"response": {"status": "201 Created", "location": f"Patient/p{n}/_history/1"}})
        entries += [{"response": {"status": "201", "location": f"https://x/fhir/Observation/o{n}{k}/_history/1"}}
                    for k in range(len(patient.observations))]
    answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}

    assert checked(transaction_check(dataset, range(2), ids), json.dumps(answer).encode()) is None
    assert ids == ["p0", "p1"]
    entries[3]["response"]["status"] = "400 Bad Request"
    assert checked(transaction_check(dataset, range(2), ids), json.dumps(answer).encode()) is not None
    assert checked(transaction_check(dataset, range(2), ids), b"{}") == "not a transaction-response Bundle"


@pytest.fixture
async def bare_url(database_url: str) -> AsyncIterator[str]:
    """The engine's URL; on PostgreSQL with a schema of its own (the session's database is shared)."""
    if not database_url.startswith("postgresql"):
        yield database_url
        return
    name = f"bare_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    await admin.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield f"{database_url}?search_path={name}"
    finally:
        await admin.execute(f'DROP SCHEMA "{name}" CASCADE')
        await admin.close()


@pytest.fixture
async def bare(bare_url: str) -> AsyncIterator[httpx.AsyncClient]:
    patients = await open_patients(bare_url)
    try:
        transport = httpx.ASGITransport(app=BareApp(patients))
        async with httpx.AsyncClient(transport=transport, base_url="https://bare.test") as client:
            yield client
    finally:
        await patients.close()


async def test_bare_search_answers_searchset_bundles_with_the_expected_totals(
    bare: httpx.AsyncClient, bare_url: str
) -> None:
    dataset = Dataset.generate(1_200)  # 60 family names, some the start of another (Wood, Woods)
    assert await add_patients(bare_url, (p.resource() for p in dataset.patients)) == 1_200
    queries = searches(dataset, [f"p{n}" for n in range(1_200)])
    for op in ("search-family", "search-identifier"):
        for query in queries[op]:
            response = await bare.get(query.path, headers=FHIR_JSON)
            assert response.status_code == 200
            assert full_check(query, "Patient")(response.content) is None, query
            assert quick_check(query)(response.content) is None, query
    assert any(q.total > 20 for q in queries["search-family"])


async def test_bare_search_pages_in_id_order_and_refuses_other_parameters(
    bare: httpx.AsyncClient, bare_url: str
) -> None:
    await add_patients(bare_url, [_patient("Wood")] * 60 + [_patient("Woods")] * 5)
    wood = (await bare.get("/fhir/Patient?family=WOOD")).json()
    ids = [e["resource"]["id"] for e in wood["entry"]]

    assert wood["total"] == 65 and len(ids) == 50 and ids == sorted(ids)
    assert (await bare.get("/fhir/Patient?family=woodS")).json()["total"] == 5
    assert (await bare.get("/fhir/Patient?family=oods")).json()["total"] == 0
    assert (await bare.get("/fhir/Patient?gender=male")).status_code == 400
    assert (await bare.get("/fhir/Patient?family=a&family=b")).status_code == 400


def _patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}], "identifier": [{"value": family}]}


async def test_the_checks_accept_the_real_servers_answers_and_catch_wrong_ones(fhir: httpx.AsyncClient) -> None:
    dataset = Dataset.generate(4)  # one family name, forty observations
    ids = []
    for patient in dataset.patients:
        created = await fhir.post("Patient", json=patient.resource(), headers=FHIR_JSON)
        ids.append(created.json()["id"])
        for o in patient.observations:
            assert (await fhir.post("Observation", json=o.resource(f"Patient/{ids[-1]}"), headers=FHIR_JSON)).is_success
    queries = searches(dataset, ids)
    for op, found in queries.items():
        res_type = "Patient" if op in ("search-family", "search-identifier") else "Observation"
        for query in random.Random(0).sample(found, min(3, len(found))):
            body = (await fhir.get(query.path.removeprefix("/fhir/"))).content
            assert (full_check(query, res_type)(body), quick_check(query)(body)) == (None, None), (query, body)
            wrong = Query(query.path, query.total + 1, query.included)
            assert full_check(wrong, res_type)(body) and quick_check(wrong)(body)


def test_the_table_shows_searches_without_a_baseline_and_the_import_verdict() -> None:
    def measured(server: str, operation: str, rps: float) -> report.Measurement:
        result = LoadResult(100, 32, 200, seconds=100 / rps, latencies_ms=[1.0] * 100)
        result.statuses[200] = 100
        return report.Measurement("postgresql", server, operation, result)

    comparisons = report.compare([measured("full", "search-family", 400), measured("bare", "search-family", 800),
                                  measured("full", "search-include", 300)])
    lines = report.table(comparisons).splitlines()
    verdicts = report.target_verdicts(comparisons)

    assert lines[1].rstrip().endswith("0.50") and lines[2].rstrip().endswith("-")
    assert [(v["verdict"], v["ratio"]) for v in verdicts] == [("PASS", 0.5)]
    missing = report.import_verdict(Import("create", unavailable="POST /fhir answered 405"), "postgresql")
    assert missing is not None and missing["verdict"] == "N/A" and "not available" in missing["measured"]
    fast = Import("transaction", resources=2_500, results=[LoadResult(25, 4, 200, seconds=1.0)])
    assert (report.import_verdict(fast, "postgresql") or {})["verdict"] == "PASS"
