"""What the audit log says about people and apps: a user acting through an app is the requestor
with the app beside them; a confined search is on the launch patient's record."""

from __future__ import annotations

from ehr.api.services import Services
from tests.audit.helpers import events
from tests.smart_auth.oauth import add_patient, add_user, bearer, https, mint, public_app


async def test_user_through_an_app_is_the_requestor_with_the_app_beside(services: Services) -> None:
    await add_patient(services, "p1")
    app = await public_app(services)
    user = await add_user(services)
    token = await mint(services, app, user, "patient/*.rs", patient="p1")
    async with await https(services) as http:
        assert (await http.get("fhir/Observation", headers=bearer(token))).status_code == 200
    (searched,) = [e for e in await events(services.db, services.keys) if e["subtype"][0]["code"] == "search-type"]
    person, beside, server = searched["agent"]
    assert person["requestor"] is True and person["type"]["coding"][0]["code"] == "humanuser"
    assert person["who"]["identifier"] == {"system": "urn:ehr:user", "value": user.id}
    assert beside["who"]["identifier"] == {"system": "urn:ehr:client", "value": app.id}
    assert beside["requestor"] is False and server["requestor"] is False
    # confined to the launch patient's compartment: the search is on that patient's record
    assert {"reference": "Patient/p1"} in [entity["what"] for entity in searched["entity"]]


async def test_a_system_client_is_not_a_person(services: Services) -> None:
    from tests.smart_auth.oauth import backend

    service = await backend(services)
    token = await mint(services, service.client, None, "system/*.rs")
    async with await https(services) as http:
        assert (await http.get("fhir/Patient", headers=bearer(token))).status_code == 200
    (searched,) = [e for e in await events(services.db, services.keys) if e["subtype"][0]["code"] == "search-type"]
    assert searched["agent"][0]["who"]["identifier"] == {"system": "urn:ehr:client", "value": service.client.id}
    assert len(searched["agent"]) == 2
