"""FHIR R4 RESTful interactions through the app, on both engines, asserting on what the client gets."""

from __future__ import annotations

from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
    "gender": "male",
    "birthDate": "1974-12-25",
}


async def create(fhir: httpx.AsyncClient, resource: dict[str, Any] = PATIENT) -> httpx.Response:
    response = await fhir.post("Patient", json=resource, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    return response


def outcome(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


async def test_create_assigns_id_and_version(fhir: httpx.AsyncClient) -> None:
    response = await create(fhir, {**PATIENT, "id": "client-chosen", "meta": {"versionId": "9"}})
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert body["name"] == PATIENT["name"]
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"https://ehr.test/fhir/Patient/{body['id']}/_history/1"
    assert "last-modified" in response.headers


async def test_read_returns_what_was_stored(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    response = await fhir.get(f"Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


async def test_decimal_precision_survives(fhir: httpx.AsyncClient) -> None:
    observation = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
        b'"valueQuantity":{"value":72.50,"unit":"kg"}}'
    )
    response = await fhir.post("Observation", content=observation, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    read = await fhir.get(f"Observation/{response.json()['id']}")
    assert b'"value":72.50' in read.content


async def test_update_makes_a_new_version(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    changed = {**created, "gender": "other"}
    response = await fhir.put(f"Patient/{created['id']}", json=changed, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.json()["gender"] == "other"
    old = await fhir.get(f"Patient/{created['id']}/_history/1")
    assert old.json()["gender"] == "male"


async def test_update_with_client_id_creates(fhir: httpx.AsyncClient) -> None:
    response = await fhir.put("Patient/pat-1", json={**PATIENT, "id": "pat-1"})
    assert response.status_code == 201
    assert response.headers["location"].endswith("/Patient/pat-1/_history/1")


async def test_stale_if_match_is_412_and_changes_nothing(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    await fhir.put(f"Patient/{created['id']}", json=created)
    stale = await fhir.put(f"Patient/{created['id']}", json=created, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert outcome(stale)["issue"][0]["code"] == "conflict"
    history = (await fhir.get(f"Patient/{created['id']}/_history")).json()
    assert history["total"] == 2


async def test_malformed_if_match_is_400(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    response = await fhir.put(f"Patient/{created['id']}", json=created, headers={"If-Match": "yesterday"})
    assert response.status_code == 400
    outcome(response)


async def test_delete_then_read_is_gone(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    deleted = await fhir.delete(f"Patient/{created['id']}")
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == 'W/"2"'
    gone = await fhir.get(f"Patient/{created['id']}")
    assert gone.status_code == 410
    assert outcome(gone)["issue"][0]["code"] == "deleted"
    assert (await fhir.get(f"Patient/{created['id']}/_history/2")).status_code == 410
    assert (await fhir.get(f"Patient/{created['id']}/_history/1")).status_code == 200


async def test_delete_twice_writes_one_tombstone(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    assert (await fhir.delete(f"Patient/{created['id']}")).status_code == 204
    assert (await fhir.delete(f"Patient/{created['id']}")).status_code == 204
    assert (await fhir.delete("Patient/never-was")).status_code == 204
    history = (await fhir.get(f"Patient/{created['id']}/_history")).json()
    assert history["total"] == 2


async def test_update_after_delete_revives(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    await fhir.delete(f"Patient/{created['id']}")
    revived = await fhir.put(f"Patient/{created['id']}", json=created)
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


async def test_conditional_read(fhir: httpx.AsyncClient) -> None:
    created = await create(fhir)
    url = f"Patient/{created.json()['id']}"
    assert (await fhir.get(url, headers={"If-None-Match": 'W/"1"'})).status_code == 304
    assert (await fhir.get(url, headers={"If-None-Match": 'W/"7"'})).status_code == 200
    modified = created.headers["last-modified"]
    assert (await fhir.get(url, headers={"If-Modified-Since": modified})).status_code == 304
    early = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (await fhir.get(url, headers={"If-Modified-Since": early})).status_code == 200


async def test_prefer_return(fhir: httpx.AsyncClient) -> None:
    minimal = await fhir.post("Patient", json=PATIENT, headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["location"]
    oo = await fhir.post("Patient", json=PATIENT, headers={"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201
    assert outcome(oo)["issue"][0]["severity"] == "information"


async def test_history_levels_newest_first_and_paged(fhir: httpx.AsyncClient) -> None:
    first = (await create(fhir)).json()
    await fhir.put(f"Patient/{first['id']}", json={**first, "gender": "female"})
    await fhir.post("Observation", json={"resourceType": "Observation", "status": "final", "code": {"text": "x"}})
    instance = (await fhir.get(f"Patient/{first['id']}/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in instance["entry"]] == ["2", "1"]
    assert instance["type"] == "history"
    assert instance["entry"][0]["request"] == {"method": "PUT", "url": f"Patient/{first['id']}"}
    type_level = (await fhir.get("Patient/_history")).json()
    assert type_level["total"] == 2
    system = (await fhir.get("_history", params={"_count": 1})).json()
    assert system["total"] == 3
    seen = []
    while True:
        seen += [e["fullUrl"] + "|" + e["response"]["etag"] for e in system["entry"]]
        following = [link["url"] for link in system["link"] if link["relation"] == "next"]
        if not following:
            break
        system = (await fhir.get(following[0])).json()
    assert len(seen) == len(set(seen)) == 3
    assert seen[0].startswith("https://ehr.test/fhir/Observation/")


async def test_history_paging_is_stable_under_writes(fhir: httpx.AsyncClient) -> None:
    for _ in range(4):
        await create(fhir)
    page = (await fhir.get("Patient/_history", params={"_count": 2})).json()
    seen = [e["fullUrl"] for e in page["entry"]]
    await create(fhir)  # a write between pages neither repeats nor hides an entry
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    page = (await fhir.get(next_url)).json()
    seen += [e["fullUrl"] for e in page["entry"]]
    assert len(set(seen)) == 4


async def test_history_shows_deletes_without_resource(fhir: httpx.AsyncClient) -> None:
    created = (await create(fhir)).json()
    await fhir.delete(f"Patient/{created['id']}")
    newest = (await fhir.get(f"Patient/{created['id']}/_history")).json()["entry"][0]
    assert newest["request"]["method"] == "DELETE"
    assert "resource" not in newest


async def test_history_of_unknown_resource_is_404(fhir: httpx.AsyncClient) -> None:
    assert (await fhir.get("Patient/nobody/_history")).status_code == 404


async def test_bad_history_parameters_are_400(fhir: httpx.AsyncClient) -> None:
    for params in ({"_count": "-1"}, {"_since": "not-a-date"}, {"_since": "2026-01-01T00:00:00"}, {"_cursor": "zz"}):
        response = await fhir.get("_history", params=params)
        assert response.status_code == 400, params
        outcome(response)
