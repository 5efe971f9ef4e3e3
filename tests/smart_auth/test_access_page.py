"""A person sees which apps have access to their records and revokes one (g10 6b: the patient's
revocation ends the app's access and refresh at once)."""

from __future__ import annotations

from urllib.parse import urlencode

from ehr.api.services import Services
from tests.audit.helpers import events
from tests.smart_auth.oauth import FORM, add_patient, add_user, bearer, https, public_app
from tests.smart_auth.test_authorize import post_form

PASSWORD = "correct horse battery staple"


async def test_a_patient_revokes_an_apps_access(services: Services) -> None:
    await add_patient(services, "p1")
    app = await public_app(services)
    peter = await add_user(services, role="patient", fhir_user="Patient/p1", username="peter")
    grant, refresh = await services.auth.grants.create(
        client_id=app.id, user_id=peter.id, scopes="patient/*.rs offline_access", patient="p1", refresh_seconds=3600
    )
    token, _ = services.auth.access_token(grant, app, peter, grant.scopes)
    other = await add_user(services, username="someone")
    others, _ = await services.auth.grants.create(client_id=app.id, user_id=other.id, scopes="user/*.rs")
    async with await https(services) as http:
        assert (await http.get("fhir/Patient/p1", headers=bearer(token))).status_code == 200
        login = await http.get("oauth/access")
        form = post_form(login)
        page = await http.post(form.action, content=urlencode(
            [*form.hidden, ("username", "peter"), ("password", PASSWORD)]), headers=FORM)
        assert page.status_code == 200 and "Public app" in page.text
        assert f"revoke-{grant.id}" in page.text and others.id not in page.text  # only their own
        revoke = post_form(page)
        assert dict(revoke.hidden)["grant"] == grant.id
        done = await http.post(revoke.action, content=urlencode(revoke.hidden), headers=FORM)
        assert done.status_code == 303
        assert (await http.get("fhir/Patient/p1", headers=bearer(token))).status_code == 401
        refreshed = await http.post("oauth/token", headers=FORM, data={
            "grant_type": "refresh_token", "refresh_token": str(refresh), "client_id": app.id})
        assert refreshed.status_code == 400
        assert "No app has access" in (await http.get("oauth/access")).text
        # another person's grant cannot be revoked from this page
        forged = await http.post("oauth/access", content=urlencode(
            [("csrf", dict(revoke.hidden)["csrf"]), ("grant", others.id)]), headers=FORM)
        assert forged.status_code == 400
    assert (await services.auth.grants.status(others.id)).active
    revoked = [e for e in await events(services.db, services.keys) if e["subtype"][0]["code"] == "revoke"]
    assert len(revoked) == 1 and revoked[0]["agent"][0]["who"]["identifier"]["value"] == peter.id
