"""Real SMART clients against the live server over HTTPS: the SMART Python client (``fhirclient``)
and ``fhirpy`` each complete a standalone launch and a Backend Services flow, then read and search.

fhirclient finds the endpoints in the CapabilityStatement's oauth-uris extension and does PKCE (S256)
and the token exchange itself; the person's part (sign in, allow) is tests/e2e/smart_flow.py's
browser. fhirpy takes a bearer token and ``requests`` options.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fhirclient import client
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from tests.e2e.smart_flow import OBSERVATION_CATEGORIES, OTHER_PATIENT, PATIENT, Deployment, deploy, query
from tests.smart_auth.jwt_helpers import make_assertion

pytestmark = pytest.mark.slow

PETERS_OBSERVATIONS = {f"peter-{code}" for code in OBSERVATION_CATEGORIES}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("clients") / "state") as served:
        yield served


@pytest.fixture
def dev_ca(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> str:
    """The dev CA for ``requests``. fhirclient's ``server.session.verify`` alone is not enough: where
    REQUESTS_CA_BUNDLE is set (as here), requests lets the environment win over Session.verify."""
    ca = str(deployment.home / "pki" / "ca.pem")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca)
    return ca


def test_fhirclient_standalone_launch_then_read_and_search(deployment: Deployment, dev_ca: str) -> None:
    app = deployment.apps["standalone"]
    smart = client.FHIRClient(settings={
        "app_id": app.client_id, "app_secret": app.secret, "api_base": deployment.base,
        "redirect_uri": app.redirect_uri, "scope": "openid fhirUser offline_access patient/*.rs",
    })
    asked = query(smart.authorize_url)   # fhirclient adds launch/patient, aud and PKCE S256
    assert asked["aud"] == deployment.base and asked["code_challenge_method"] == "S256"
    with deployment.browser() as peter:
        outcome = peter.authorize(smart.authorize_url)
    smart.handle_callback(outcome.redirect)   # state check, then the code exchange with HTTP Basic
    assert smart.ready and smart.patient_id == PATIENT
    assert smart.patient is not None and smart.patient.name[0].family == "Chalmers"
    found = list(Observation.where(struct={"patient": PATIENT}).perform_resources_iter(smart.server))
    assert {o.id for o in found} == PETERS_OBSERVATIONS
    assert {o.subject.reference for o in found} == {f"Patient/{PATIENT}"}
    assert smart.reauthorize()                # refresh_token grant, as fhirclient sends it
    assert Patient.read(PATIENT, smart.server).birthDate.isostring == "1974-12-25"
    smart.server.session.close()


def test_fhirclient_backend_services_then_read_and_search(deployment: Deployment, dev_ca: str) -> None:
    app = deployment.apps["backend"]
    assert app.key is not None
    assertion = make_assertion(app.key, kid=app.kid, client_id=app.client_id,
                               audience=deployment.oauth.config["token_endpoint"], alg="RS384")
    system = client.FHIRClient(settings={
        "app_id": app.client_id, "api_base": deployment.base, "jwt_token": assertion, "scope": "system/*.rs",
    })
    system.wants_patient = False              # else fhirclient adds launch/patient to a system request
    assert not system.prepare()               # endpoints known from /metadata; no token yet
    system.authorize()                        # client_credentials with the client assertion
    assert system.ready
    assert Patient.read(PATIENT, system.server).name[0].given == ["Peter"]
    found = list(Observation.where(struct={"patient": PATIENT}).perform_resources_iter(system.server))
    assert {o.id for o in found} == PETERS_OBSERVATIONS
    system.server.session.close()


def test_fhirpy_with_a_standalone_launch_token(deployment: Deployment) -> None:
    token = deployment.tokens("public", "launch/patient openid fhirUser patient/*.rs")["access_token"]
    fhir = SyncFHIRClient(deployment.base, authorization=f"Bearer {token}",
                          requests_config={"verify": str(deployment.home / "pki" / "ca.pem")})
    found = fhir.resources("Observation").search(patient=PATIENT).fetch()
    assert {o.id for o in found} == PETERS_OBSERVATIONS
    assert fhir.reference("Patient", PATIENT).to_resource()["name"][0]["family"] == "Chalmers"
    with pytest.raises(ResourceNotFound):     # another patient's record is as if absent
        fhir.reference("Patient", OTHER_PATIENT).to_resource()


def test_fhirpy_with_a_backend_services_token(deployment: Deployment) -> None:
    answer = deployment.oauth.client_credentials(deployment.apps["backend"], "system/*.rs")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "system/*.rs" and 0 < body["expires_in"] <= 300
    fhir = SyncFHIRClient(deployment.base, authorization=f"Bearer {body['access_token']}",
                          requests_config={"verify": str(deployment.home / "pki" / "ca.pem")})
    assert {o.id for o in fhir.resources("Observation").search(patient=PATIENT).fetch()} == PETERS_OBSERVATIONS
    laboratory = fhir.resources("Observation").search(category="laboratory").fetch()
    assert {o.id for o in laboratory} == {"peter-laboratory", "olive-laboratory"}
    assert fhir.reference("Patient", OTHER_PATIENT).to_resource()["name"][0]["given"] == ["Olive"]
