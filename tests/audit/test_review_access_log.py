"""``Patient/{id}/$access-log``: the accounting of disclosures (45 CFR 164.528) from the audit log:
every event about that patient, newest first, and none about anyone else (scenario: test_review.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ehr.api.services import Services
from ehr.db.database import Database
from ehr.pki import DevPki
from tests.audit.helpers import count
from tests.audit.test_review import A_EVENTS, B_EVENTS, Scenario, scenario_of
from tests.conftest import FixedClock


@pytest.fixture
async def scenario(services: Services, pki: DevPki, clock: FixedClock) -> AsyncIterator[Scenario]:
    async with scenario_of(services, pki, clock) as built:
        yield built


async def access_log(scenario: Scenario, patient: str, **params: str) -> tuple[list[str], dict[str, Any]]:
    response = await scenario.reviewer.get(f"Patient/{patient}/$access-log", params=params)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["type"] == "searchset"
    return [scenario.label.get(e["resource"]["id"], "review") for e in bundle["entry"]], bundle


PERIODS = [
    ({}, "A", A_EVENTS),
    ({}, "B", B_EVENTS),
    ({}, "nobody", []),  # its failed read named no patient: the Patient was never found
    ({"start": "2026"}, "A", ["historyA", "updateA", "readA"]),
    ({"end": "2026-01-01"}, "A", ["readA", "createA"]),  # end takes in the whole day
    ({"start": "2026-11", "end": "2026-11"}, "A", ["updateA"]),
    ({"start": "2026-11-23T12:00:00Z", "end": "2026-12-31"}, "B", ["deleteB", "readB"]),
    ({"start": "2028"}, "A", []),
]


@pytest.mark.parametrize(("params", "who", "expected"), PERIODS)
async def test_exactly_the_patients_events(
    scenario: Scenario, params: dict[str, str], who: str, expected: list[str]
) -> None:
    found, bundle = await access_log(scenario, scenario.ids.get(who, who), **params)
    assert found == expected
    assert bundle["total"] == len(expected)


async def test_one_event_per_call_and_the_call_is_in_the_log(scenario: Scenario, db: Database) -> None:
    before = await count(db)
    first, _ = await access_log(scenario, scenario.ids["A"])
    assert await count(db) == before + 1
    second, _ = await access_log(scenario, scenario.ids["A"])
    assert second == ["review", *first]  # who reviewed the patient's accounting is part of it
    others, _ = await access_log(scenario, scenario.ids["B"])
    assert others == B_EVENTS


async def test_reading_an_event_about_the_patient_is_in_their_log(scenario: Scenario) -> None:
    await scenario.reviewer.get(f"AuditEvent/{scenario.ids['readB']}")
    await scenario.reviewer.get(f"AuditEvent/{scenario.ids['createObs']}")  # about no patient
    found, _ = await access_log(scenario, scenario.ids["B"])
    assert found == ["review", *B_EVENTS]


async def test_paging(scenario: Scenario, services: Services) -> None:
    patient = scenario.ids["A"]
    found, bundle = await access_log(scenario, patient, _count="1")
    assert bundle["total"] == 4 and found == ["historyA"]
    base = f"{services.base}/Patient/{patient}/$access-log"
    assert bundle["link"][0] == {"relation": "self", "url": f"{base}?_count=1"}
    seen = list(found)
    while next_link := next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None):
        assert next_link.startswith(f"{base}?_count=1&_cursor=")
        response = await scenario.reviewer.get(next_link)
        bundle = response.json()
        seen += [scenario.label[e["resource"]["id"]] for e in bundle["entry"]]
    assert seen == A_EVENTS


async def test_parameters_are_checked(scenario: Scenario) -> None:
    patient = scenario.ids["A"]
    for params in ({"start": "someday"}, {"end": "2026-02-30"}, {"patient": patient}, {"date": "2026"}):
        response = await scenario.reviewer.get(f"Patient/{patient}/$access-log", params=params)
        assert response.status_code == 400, params
        assert response.json()["issue"][0]["code"] == "invalid"
    lenient = await scenario.reviewer.get(f"Patient/{patient}/$access-log", params={"date": "2026"},
                                          headers={"Prefer": "handling=lenient"})
    assert lenient.status_code == 200
    assert lenient.json()["total"] == 4 + 4  # A's events, and the four refused reviews of A's log
