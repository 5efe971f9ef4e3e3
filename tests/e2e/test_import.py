"""``ehr import`` end to end: NDJSON, transaction and collection Bundles through the real command,
bad lines reported by place (never by value) and costing only themselves, then searched through
a real server over mutual TLS and checked by ``ehr verify``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from tests.e2e.server import client_context, ehr, running_server

MRN = "urn:oid:1.2.3.4"


def patient(n: int) -> dict[str, object]:
    return {"resourceType": "Patient", "id": f"imp-{n}", "identifier": [{"system": MRN, "value": f"IMP-{n}"}],
            "name": [{"family": "Importwell", "given": [f"G{n}"]}], "birthDate": f"19{50 + n % 40}-01-01"}


def observation(n: int) -> dict[str, object]:
    return {"resourceType": "Observation", "id": f"obs-{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/imp-{n % 30}"}, "valueQuantity": {"value": 60 + n, "unit": "/min"}}


def write_inputs(folder: Path) -> None:
    lines = [json.dumps(patient(n)) for n in range(30)] + [json.dumps(observation(n)) for n in range(60)]
    lines.insert(10, "{not json")
    lines.insert(20, json.dumps({"resourceType": "Patient", "gender": "SECRET-VALUE-42"}))
    (folder / "data.ndjson").write_text("\n".join(lines) + "\n")
    full_url = f"urn:uuid:{uuid.uuid4()}"
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": full_url, "resource": {"resourceType": "Patient", "name": [{"family": "Bundled"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": full_url}}, "request": {"method": "POST", "url": "Observation"}},
    ]}
    (folder / "sub").mkdir()
    (folder / "sub" / "transaction.json").write_text(json.dumps(transaction))
    collection = {"resourceType": "Bundle", "type": "collection",
                  "entry": [{"resource": {"resourceType": "Practitioner", "name": [{"family": "Collected"}]}}]}
    (folder / "sub" / "collection.json").write_text(json.dumps(collection))


def test_import_loads_reports_and_verifies(home: Path, server_database: str, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_inputs(inputs)
    result = ehr(home, "import", str(inputs), "--chunk", "25", database_url=server_database)
    assert result.returncode == 1, result.stdout + result.stderr  # two bad lines
    assert "3 file(s): 93 resource(s) loaded, 2 failed" in result.stdout
    assert "data.ndjson:11: not valid JSON" in result.stdout
    assert "data.ndjson:21:" in result.stdout
    assert "SECRET-VALUE-42" not in result.stdout + result.stderr
    verify = ehr(home, "verify", database_url=server_database)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    with running_server(home, server_database) as base, httpx.Client(verify=client_context(home)) as client:
        found = client.get(f"{base}/Observation", params={"subject:Patient.family": "importwell", "_total": "accurate"})
        assert found.status_code == 200 and found.json()["total"] == 60
        bundled = client.get(f"{base}/Observation", params={"subject:Patient.family": "bundled"})
        assert bundled.json()["total"] == 1
        assert client.get(f"{base}/Practitioner", params={"family": "collected"}).json()["total"] == 1
        assert client.get(f"{base}/Patient/imp-3").json()["identifier"][0]["value"] == "IMP-3"
