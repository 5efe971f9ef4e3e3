"""FHIR search over HTTP on both engines, against hand-checked expectations on a small record set."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

FHIR_JSON = "application/fhir+json"
LOINC = "http://loinc.org"
MRN = "urn:oid:1.2.36.146.595.217.0.1"


async def post(fhir: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await fhir.post(resource["resourceType"], json=resource, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def patient(family: str, given: str, gender: str, birth: str, mrn: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth,
        "identifier": [{"system": MRN, "value": mrn}],
        **more,
    }


def observation(subject: str, code: str, value: float, unit: str, when: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}], "text": "vital sign"},
        "subject": {"reference": f"Patient/{subject}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }


@pytest.fixture
async def records(fhir: httpx.AsyncClient) -> dict[str, str]:
    """Three patients, a practitioner and three observations; their ids by a short name."""
    welby = await post(fhir, {"resourceType": "Practitioner", "name": [{"family": "Welby"}]})
    p1 = await post(fhir, patient("Chalmers", "Peter", "male", "1974-12-25", "MRN-12345",
                                  telecom=[{"system": "phone", "value": "555-0199"}]))
    p2 = await post(fhir, patient("Müller", "Anna", "female", "1980-03", "MRN-67890",
                                  generalPractitioner=[{"reference": f"Practitioner/{welby['id']}"}]))
    p3 = await post(fhir, patient("Smith", "John", "male", "2001-07-14", "MRN-55555"))
    o1 = await post(fhir, observation(p1["id"], "8480-6", 120, "mm[Hg]", "2024-05-01T10:00:00Z"))
    o2 = await post(fhir, observation(p1["id"], "8867-4", 72, "/min", "2024-06-01"))
    o3 = await post(fhir, observation(p2["id"], "8480-6", 140, "mm[Hg]", "2023-01-01T08:30:00+02:00"))
    return {"welby": welby["id"], "p1": p1["id"], "p2": p2["id"], "p3": p3["id"],
            "o1": o1["id"], "o2": o2["id"], "o3": o3["id"]}


async def search(fhir: httpx.AsyncClient, url: str, **headers: str) -> dict[str, Any]:
    response = await fhir.get(url, headers=headers)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return bundle


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode}


async def found(fhir: httpx.AsyncClient, url: str) -> set[str]:
    return ids(await search(fhir, url))


def named(records: dict[str, str], *names: str) -> set[str]:
    return {records[n] for n in names}


async def test_string_is_a_case_and_accent_insensitive_prefix(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Patient?family=chal") == named(records, "p1")
    assert await found(fhir, "Patient?family=MUL") == named(records, "p2")
    assert await found(fhir, "Patient?name=pet") == named(records, "p1")
    assert await found(fhir, "Patient?family=halmers") == set()


async def test_string_exact_is_case_and_accent_sensitive(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Patient?family:exact=Müller") == named(records, "p2")
    assert await found(fhir, "Patient?family:exact=Muller") == set()
    assert await found(fhir, "Patient?family:exact=Chal") == set()


async def test_contains_is_refused_on_the_blind_index(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    response = await fhir.get("Patient?family:contains=alm")
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_token_forms(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, f"Patient?identifier={MRN}|MRN-12345") == named(records, "p1")
    assert await found(fhir, "Patient?identifier=MRN-12345") == named(records, "p1")
    assert await found(fhir, "Patient?identifier=|MRN-12345") == set()  # it has a system
    assert await found(fhir, f"Patient?identifier={MRN}|") == named(records, "p1", "p2", "p3")
    assert await found(fhir, "Patient?gender=male") == named(records, "p1", "p3")
    assert await found(fhir, "Patient?gender:not=male") == named(records, "p2")
    assert await found(fhir, "Patient?phone=555-0199") == named(records, "p1")
    assert await found(fhir, "Observation?code:text=vital") == named(records, "o1", "o2", "o3")


async def test_or_by_comma_and_and_by_repetition(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Patient?family=chal,smi") == named(records, "p1", "p3")
    assert await found(fhir, "Patient?gender=male&family=smi") == named(records, "p3")
    assert await found(fhir, "Patient?family=chal&family=smi") == set()


async def test_dates_match_by_the_precision_of_both_values(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Patient?birthdate=1974") == named(records, "p1")
    assert await found(fhir, "Patient?birthdate=1980-03") == named(records, "p2")
    assert await found(fhir, "Patient?birthdate=1980-03-15") == set()  # March 1980 is not within that day
    assert await found(fhir, "Patient?birthdate=lt1980") == named(records, "p1")
    assert await found(fhir, "Patient?birthdate=ge1980-01-01") == named(records, "p2", "p3")
    assert await found(fhir, "Patient?birthdate=sa1990") == named(records, "p3")
    assert await found(fhir, "Patient?birthdate=eb1975") == named(records, "p1")
    assert await found(fhir, "Patient?birthdate=ne1974") == named(records, "p2", "p3")
    # 2023-01-01T08:30+02:00 is 06:30 UTC
    assert await found(fhir, "Observation?date=2023-01-01T06:30:00Z") == named(records, "o3")
    assert await found(fhir, "Observation?date=ge2024-01-01") == named(records, "o1", "o2")


async def test_quantity_with_prefixes_and_units(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Observation?value-quantity=gt130") == named(records, "o3")
    assert await found(fhir, "Observation?value-quantity=120||mm[Hg]") == named(records, "o1")
    assert await found(fhir, "Observation?value-quantity=120||/min") == set()
    assert await found(fhir, "Observation?value-quantity=le120") == named(records, "o1", "o2")


async def test_references_by_type_and_id_plain_id_and_absolute_url(
    fhir: httpx.AsyncClient, records: dict[str, str]
) -> None:
    p1 = records["p1"]
    assert await found(fhir, f"Observation?subject=Patient/{p1}") == named(records, "o1", "o2")
    assert await found(fhir, f"Observation?patient={p1}") == named(records, "o1", "o2")
    assert await found(fhir, f"Observation?subject=https://ehr.test/fhir/Patient/{p1}") == named(records, "o1", "o2")
    assert await found(fhir, f"Patient?general-practitioner=Practitioner/{records['welby']}") == named(records, "p2")


async def test_chained_and_reverse_chained(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Observation?subject:Patient.name=anna") == named(records, "o3")
    assert await found(fhir, "Observation?patient.family=chal&code=8480-6") == named(records, "o1")
    assert await found(fhir, "Patient?_has:Observation:patient:code=8867-4") == named(records, "p1")
    assert await found(fhir, "Patient?general-practitioner.family=welby") == named(records, "p2")


async def test_missing(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, "Patient?general-practitioner:missing=false") == named(records, "p2")
    assert await found(fhir, "Patient?phone:missing=true") == named(records, "p2", "p3")


async def test_id_and_last_updated(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, f"Patient?_id={records['p1']},{records['p3']}") == named(records, "p1", "p3")
    assert await found(fhir, "Patient?_lastUpdated=gt2020-01-01") == named(records, "p1", "p2", "p3")
    assert await found(fhir, "Patient?_lastUpdated=lt2020-01-01") == set()


async def test_include_and_revinclude(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    bundle = await search(fhir, "Observation?code=8480-6&_include=Observation:patient")
    assert ids(bundle) == named(records, "o1", "o3")
    assert ids(bundle, "include") == named(records, "p1", "p2")
    assert bundle["total"] == 2
    bundle = await search(fhir, f"Patient?_id={records['p1']}&_revinclude=Observation:patient")
    assert ids(bundle) == named(records, "p1")
    assert ids(bundle, "include") == named(records, "o1", "o2")
    bundle = await search(
        fhir, "Observation?code=8480-6&_include=Observation:patient&_include:iterate=Patient:general-practitioner"
    )
    assert ids(bundle, "include") == named(records, "p1", "p2", "welby")


async def test_sort_by_date_both_ways_and_refuse_blind_strings(
    fhir: httpx.AsyncClient, records: dict[str, str]
) -> None:
    up = await search(fhir, "Patient?_sort=birthdate")
    assert [e["resource"]["id"] for e in up["entry"]] == [records["p1"], records["p2"], records["p3"]]
    down = await search(fhir, "Patient?_sort=-birthdate")
    assert [e["resource"]["id"] for e in down["entry"]] == [records["p3"], records["p2"], records["p1"]]
    assert (await fhir.get("Patient?_sort=family")).status_code == 400


async def test_paging_visits_every_match_once_forward_and_back(
    fhir: httpx.AsyncClient, records: dict[str, str]
) -> None:
    page = await search(fhir, "Patient?_count=1&_sort=birthdate")
    seen = []
    pages = [page]
    while True:
        assert page["total"] == 3
        seen += [e["resource"]["id"] for e in page["entry"]]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = await search(fhir, following[0])
        pages.append(page)
    assert seen == [records["p1"], records["p2"], records["p3"]]
    previous = [link["url"] for link in pages[-1]["link"] if link["relation"] == "previous"]
    back = await search(fhir, previous[0])
    assert [e["resource"]["id"] for e in back["entry"]] == [records["p2"]]


async def test_paging_stays_correct_while_writes_continue(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    page = await search(fhir, "Patient?_count=2")
    seen = [e["resource"]["id"] for e in page["entry"]]
    while True:
        for n in range(3):  # new patients (anywhere in id order) and an update of one already seen
            await post(fhir, patient(f"New{n}", "X", "other", "1990", f"MRN-N{n}"))
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = await search(fhir, following[0])
        seen += [e["resource"]["id"] for e in page["entry"]]
    assert len(seen) == len(set(seen))
    assert named(records, "p1", "p2", "p3") <= set(seen)


async def test_summary_count_and_elements(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    counted = await search(fhir, "Patient?gender=male&_summary=count")
    assert counted["total"] == 2 and not counted.get("entry")
    bundle = await search(fhir, "Patient?gender=female&_elements=gender")
    (entry,) = bundle["entry"]
    assert entry["resource"]["gender"] == "female" and "name" not in entry["resource"]
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in (
        entry["resource"]["meta"]["tag"]
    )
    summary = await search(fhir, "Patient?gender=female&_summary=true")
    resource = summary["entry"][0]["resource"]
    assert "name" in resource and "generalPractitioner" not in resource  # isSummary or not, in R4


async def test_total_none_leaves_total_out(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    bundle = await search(fhir, "Patient?_total=none")
    assert "total" not in bundle and len(bundle["entry"]) == 3


async def test_unknown_parameters_strict_and_lenient(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    strict = await fhir.get("Patient?shoe-size=42")
    assert strict.status_code == 400
    assert "shoe-size" in strict.json()["issue"][0]["diagnostics"]
    lenient = await search(fhir, "Patient?shoe-size=42&gender=female", prefer="handling=lenient")
    assert ids(lenient) == named(records, "p2")
    (outcome,) = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome["resource"]["issue"][0]["severity"] == "warning"


async def test_post_search_with_a_form_body(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    response = await fhir.post(
        "Patient/_search", content="family=chal", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200
    assert ids(response.json()) == named(records, "p1")
    refused = await fhir.post("Patient/_search", content="{}", headers={"Content-Type": FHIR_JSON})
    assert refused.status_code == 415


async def test_compartment_search_and_everything(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    p1 = records["p1"]
    assert await found(fhir, f"Patient/{p1}/Observation") == named(records, "o1", "o2")
    assert await found(fhir, f"Patient/{p1}/Observation?code=8867-4") == named(records, "o2")
    assert await found(fhir, f"Patient/{p1}/$everything") == named(records, "p1", "o1", "o2")


async def test_compartment_confines_includes(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    """An _include that leads out of the patient's compartment brings nothing back (the filter is in SQL)."""
    bundle = await search(fhir, f"Patient/{records['p2']}/Patient?_include=Patient:general-practitioner")
    assert ids(bundle) == named(records, "p2")
    assert ids(bundle, "include") == set()  # the practitioner is in no patient's compartment


async def test_writes_update_the_index(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    p3 = (await fhir.get(f"Patient/{records['p3']}")).json()
    p3["name"] = [{"family": "Jones"}]
    assert (await fhir.put(f"Patient/{records['p3']}", json=p3, headers={"Content-Type": FHIR_JSON})).status_code == 200
    assert await found(fhir, "Patient?family=smith") == set()
    assert await found(fhir, "Patient?family=jones") == named(records, "p3")
    assert (await fhir.delete(f"Observation/{records['o2']}")).status_code == 204
    assert await found(fhir, f"Observation?patient={records['p1']}") == named(records, "o1")


async def test_system_level_search(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    everything = await search(fhir, f"?_id={records['p1']},{records['o1']}")
    assert ids(everything) == named(records, "p1", "o1")


async def test_links_keep_the_query(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    bundle = await search(fhir, "Patient?gender=male&_count=1")
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    query = parse_qs(urlsplit(links["next"]).query)
    assert query["gender"] == ["male"] and query["_count"] == ["1"] and "_cursor" in query
    assert links["self"].startswith("https://ehr.test/fhir/Patient?")


async def test_a_forged_cursor_is_a_clear_error(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    for cursor in ("garbage", "WyJuIiwgMV0", "WyJuIiwgMSwgMiwgM10"):
        response = await fhir.get(f"Patient?_cursor={cursor}")
        assert response.status_code == 400, cursor


async def test_composite_code_value_quantity(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    assert await found(fhir, f"Observation?code-value-quantity={LOINC}|8480-6$gt130") == named(records, "o3")
    assert await found(fhir, "Observation?code-value-quantity=8480-6$120||mm[Hg]") == named(records, "o1")
    assert await found(fhir, "Observation?code-value-quantity=8867-4$gt130") == set()  # both parts from one element
    assert await found(fhir, "Observation?code-value-quantity=8480-6$lt200,8867-4$72") == named(
        records, "o1", "o2", "o3"
    )


async def test_composite_on_components(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    pressure = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "85354-9"}]},
        "subject": {"reference": f"Patient/{records['p3']}"},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 150}},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": 95}},
        ],
    }
    created = await post(fhir, pressure)
    assert await found(fhir, "Observation?component-code-value-quantity=8462-4$gt90") == {created["id"]}
    assert await found(fhir, "Observation?component-code-value-quantity=8462-4$gt100") == set()
    assert await found(fhir, "Observation?component-code-value-quantity=8480-6$95") == set()  # not across components


async def test_paging_under_concurrent_writers(fhir: httpx.AsyncClient, records: dict[str, str]) -> None:
    """Writers create and update patients while a reader pages: every patient that existed before
    and was never deleted is seen exactly once."""
    before = await search(fhir, "Patient?_count=500")
    original = {e["resource"]["id"] for e in before["entry"]}
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        k = 0
        while not stop.is_set() and k < 25:  # bounded, so the reader always reaches the end
            await post(fhir, patient(f"W{n}x{k}", "Y", "other", "1990", f"MRN-W{n}-{k}"))
            current = (await fhir.get(f"Patient/{records['p1']}")).json()
            await fhir.put(f"Patient/{records['p1']}", json=current, headers={"Content-Type": FHIR_JSON})
            k += 1

    writers = [asyncio.create_task(writer(n)) for n in range(3)]
    try:
        seen: list[str] = []
        page = await search(fhir, "Patient?_count=1")
        while True:
            seen += [e["resource"]["id"] for e in page["entry"]]
            following = [link["url"] for link in page["link"] if link["relation"] == "next"]
            if not following:
                break
            page = await search(fhir, following[0])
    finally:
        stop.set()
        await asyncio.gather(*writers)
    assert len(seen) == len(set(seen))
    assert original <= set(seen)
