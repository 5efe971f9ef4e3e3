"""Bad input gets a clear OperationOutcome with the right status, and changes nothing."""

from __future__ import annotations

import httpx
import pytest

from ehr.api.services import Services
from ehr.context import operator_context
from ehr.errors import EhrError
from ehr.pki import DevPki
from tests.api.test_crud import PATIENT, create, outcome
from tests.conftest import make_client, register


async def _count(fhir: httpx.AsyncClient) -> int:
    total: int = (await fhir.get("_history", params={"_count": 0})).json()["total"]
    return total


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid"),
        (b'{"resourceType":"Patient","gender":"male","gender":"female"}', 400, "invalid"),
        (b"[]", 400, "invalid"),
        (b'{"resourceType":"Observation","status":"final","code":{"text":"x"}}', 400, "invalid"),
        (b'{"resourceType":"Patient","nickname":"Pete"}', 400, "structure"),
        (b'{"resourceType":"Patient","birthDate":"1974-13-45"}', 400, "structure"),
        (b'{"resourceType":"Patient","name":{"family":"x"}}', 400, "structure"),
        (b'{"resourceType":"Patient","gender":"sometimes"}', 422, "processing"),
    ],
)
async def test_invalid_create(fhir: httpx.AsyncClient, body: bytes, status: int, code: str) -> None:
    before = await _count(fhir)
    response = await fhir.post("Patient", content=body, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == status, response.text
    assert outcome(response)["issue"][0]["code"] == code
    assert await _count(fhir) == before


async def test_validation_issue_names_the_element_not_the_value(fhir: httpx.AsyncClient) -> None:
    body = b'{"resourceType":"Patient","birthDate":"Chalmers-secret"}'
    response = await fhir.post("Patient", content=body, headers={"Content-Type": "application/fhir+json"})
    issues = outcome(response)["issue"]
    assert any("Patient.birthDate" in issue.get("expression", []) for issue in issues)
    assert "Chalmers-secret" not in response.text


async def test_update_id_must_match_url(fhir: httpx.AsyncClient) -> None:
    response = await fhir.put("Patient/a", json={**PATIENT, "id": "b"})
    assert response.status_code == 400
    assert (await fhir.put("Patient/a", json=PATIENT)).status_code == 400
    assert (await fhir.get("Patient/a")).status_code == 404


async def test_invalid_id_is_400(fhir: httpx.AsyncClient) -> None:
    response = await fhir.put("Patient/" + "x" * 65, json={**PATIENT, "id": "x" * 65})
    assert response.status_code == 400


async def test_unknown_type_is_404(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post("Spaceship", json={"resourceType": "Spaceship"})
    assert response.status_code == 404
    outcome(response)
    assert (await fhir.get("Spaceship/1")).status_code == 404


async def test_unknown_resource_and_version_are_404(fhir: httpx.AsyncClient) -> None:
    assert (await fhir.get("Patient/nobody")).status_code == 404
    created = (await create(fhir)).json()
    assert (await fhir.get(f"Patient/{created['id']}/_history/2")).status_code == 404
    assert (await fhir.get(f"Patient/{created['id']}/_history/x")).status_code == 404


async def test_unsupported_media_type_is_415(fhir: httpx.AsyncClient) -> None:
    response = await fhir.post("Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"})
    assert response.status_code == 415
    outcome(response)


async def test_unsupported_format_is_406(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    assert (await fhir.get(f"Patient/{created['id']}", params={"_format": "xml"})).status_code == 406
    response = await fhir.get(f"Patient/{created['id']}", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    outcome(response)
    ok = await fhir.get(f"Patient/{created['id']}", params={"_format": "json"})
    assert ok.status_code == 200


async def test_method_not_allowed_is_405(fhir: httpx.AsyncClient) -> None:
    response = await fhir.request("OPTIONS", "Patient/1")
    assert response.status_code == 405
    outcome(response)


async def test_too_large_is_413(fhir: httpx.AsyncClient, services: Services) -> None:
    big = b'{"resourceType":"Patient","text":"' + b"x" * services.settings.max_body_bytes + b'"}'
    response = await fhir.post("Patient", content=big, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 413
    outcome(response)


async def test_metadata_is_public_and_generated(services: Services) -> None:
    async with await make_client(services, None) as anonymous:
        response = await anonymous.get("metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert {"Patient", "Observation", "MedicinalProduct", "EffectEvidenceSynthesis"} <= types
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert {i["code"] for i in patient["interaction"]} >= {"read", "vread", "create", "update", "delete"}
    assert {"search-type"} <= {i["code"] for i in patient["interaction"]}
    params = {p["name"]: p["type"] for p in patient["searchParam"]}
    assert params["family"] == "string" and params["identifier"] == "token" and params["birthdate"] == "date"
    assert "Patient:general-practitioner" in patient["searchInclude"]
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    assert "code-value-quantity" in {p["name"] for p in observation["searchParam"]}


async def test_no_certificate_is_401(services: Services) -> None:
    async with await make_client(services, None) as anonymous:
        response = await anonymous.get("Patient/1")
    assert response.status_code == 401
    outcome(response)


async def test_unregistered_certificate_is_401(services: Services, pki: DevPki) -> None:
    async with await make_client(services, pki.client_cert.read_text()) as stranger:
        response = await stranger.post("Patient", json=PATIENT)
    assert response.status_code == 401
    outcome(response)


async def test_disabled_client_is_403(services: Services, pki: DevPki) -> None:
    pem = pki.client_cert.read_text()
    client_id = await register(services, pem, "system/*.cruds")
    await services.clients.set_disabled(operator_context(), client_id, True)
    async with await make_client(services, pem) as disabled:
        response = await disabled.get("Patient/1")
    assert response.status_code == 403
    outcome(response)


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        ("system/Patient.rs", {"read"}),
        ("system/Patient.read", {"read"}),
        ("system/Patient.c", {"create"}),
        ("system/Observation.cruds", set()),
        ("system/Patient.cruds?gender=female", set()),  # granular: reads what matches, never writes
        ("system/Patient.cruds?gender=male", {"read"}),
        ("system/*.write", {"create"}),
    ],
)
async def test_scopes_decide(services: Services, pki: DevPki, scopes: str, allowed: set[str]) -> None:
    pem = pki.client_cert.read_text()
    await register(services, pem, scopes)
    await services.store.update(_admin_ctx(), "Patient", "p1", {**PATIENT, "id": "p1"})
    async with await make_client(services, pem) as client:
        read = await client.get("Patient/p1")
        created = await client.post("Patient", json=PATIENT)
    assert (read.status_code == 200) == ("read" in allowed), read.text
    assert (created.status_code == 201) == ("create" in allowed), created.text
    for response in (read, created):
        if response.status_code >= 400:
            # a granular scope the resource does not match answers as if it did not exist
            assert response.status_code == (404 if "?" in scopes and response is read else 403)
            outcome(response)


@pytest.mark.parametrize("scopes", ["patient/Patient.cruds", "user/*.cruds"])
async def test_certificate_clients_get_system_scopes_only(services: Services, pki: DevPki, scopes: str) -> None:
    """patient/ and user/ scopes need a launch patient or a signed-in user, which a certificate
    alone never has: registering them for a certificate client is refused."""
    with pytest.raises(EhrError) as refused:
        await register(services, pki.client_cert.read_text(), scopes)
    assert refused.value.category.status == 400


def _admin_ctx():  # type: ignore[no-untyped-def]
    from ehr.context import system_context

    return system_context("test")
