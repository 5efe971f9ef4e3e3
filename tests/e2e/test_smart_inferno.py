"""The ONC (g)(10) Inferno groups of SMART-CHECKLIST section (c) that need no bulk data, replayed
against a live server over TLS: the app side and the person's pages as tests/e2e/smart_flow.py plays
them. Each test carries its group id; the groups' assertions are the test kits' [I1, I2].

BS-02 (TLS 1.2+ on the token and FHIR endpoints) is test_tls_server.py::test_bs02_...: the token
endpoint is served on the FHIR endpoint's TLS listener (test_inferno_1_discovery checks that they
share an origin), and that test refuses TLS 1.1 on both.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import KeySet

from tests.conftest import ADMIN_URL, _admin
from tests.e2e.smart_flow import (
    CONDITION_CATEGORIES,
    OBSERVATION_CATEGORIES,
    OTHER_PATIENT,
    PATIENT,
    PRACTITIONER,
    RECORD_TYPES,
    Consent,
    Deployment,
    deploy,
    query,
)

pytestmark = pytest.mark.slow

# The (g)(10) request lists: every US Core type, patient- or user-level, v2 or v1 [I1]
G10_TYPES = ("Medication", "AllergyIntolerance", "CarePlan", "CareTeam", "Condition", "Device", "DiagnosticReport",
             "DocumentReference", "Encounter", "Goal", "Immunization", "Location", "MedicationRequest", "Observation",
             "Organization", "Patient", "Practitioner", "Procedure", "Provenance", "PractitionerRole")
STANDALONE = "launch/patient openid fhirUser offline_access"
PATIENT_V2 = f"{STANDALONE} " + " ".join(f"patient/{t}.rs" for t in G10_TYPES)
PATIENT_V1 = f"{STANDALONE} " + " ".join(f"patient/{t}.read" for t in G10_TYPES)
EHR_USER_V2 = "launch openid fhirUser offline_access " + " ".join(f"user/{t}.rs" for t in G10_TYPES)
STANDALONE_CAPABILITIES = {
    "launch-standalone", "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect", "context-standalone-patient", "permission-offline", "permission-patient",
    "authorize-post", "permission-v2", "permission-v1",
}
EHR_CAPABILITIES = {
    "launch-ehr", "client-confidential-symmetric", "client-confidential-asymmetric", "sso-openid-connect",
    "context-banner", "context-style", "context-ehr-patient", "permission-offline", "permission-user",
    "authorize-post", "permission-v2", "permission-v1",
}
NOT_STORED = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def granular(resource_type: str, codes: list[str]) -> list[str]:
    systems = OBSERVATION_CATEGORIES if resource_type == "Observation" else CONDITION_CATEGORIES
    return [f"patient/{resource_type}.rs?category={systems[code]}|{code}" for code in codes]


# -- deployments -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deploy(tmp_path_factory.mktemp("smart") / "state") as deployment:
        yield deployment


@pytest.fixture(scope="module")
def postgresql(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    request.getfixturevalue("postgres_url")  # skips (or fails in CI) when PostgreSQL is unreachable
    name = f"ehr_smart_{uuid.uuid4().hex[:12]}"
    _admin(ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        with deploy(tmp_path_factory.mktemp("smart-pg") / "state", url) as deployment:
            yield deployment
    finally:
        _admin(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engines(request: pytest.FixtureRequest) -> Deployment:
    deployment: Deployment = request.getfixturevalue(request.param)
    return deployment


@pytest.fixture(scope="module")
def group1(engines: Deployment) -> tuple[Deployment, httpx.Response]:
    """Group 1's launch: Peter signs in to the confidential standalone app and allows everything."""
    request, outcome = engines.authorize("standalone", PATIENT_V2)
    assert outcome.params["state"] == request.state and outcome.pages == ["login", "consent"]
    return engines, engines.oauth.exchange(engines.apps["standalone"], outcome.params["code"], request.pkce.verifier)


# -- 1: Standalone Patient App, full access ---------------------------------------------------------


def test_inferno_1_discovery_fields_and_capabilities(engines: Deployment) -> None:
    for accept in (None, "*/*", "application/fhir+json"):
        answer = engines.oauth.http.get(f"{engines.base}/.well-known/smart-configuration",
                                        headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    config = engines.oauth.config
    assert {"authorization_code", "client_credentials"} <= set(config["grant_types_supported"])
    assert "S256" in config["code_challenge_methods_supported"]
    assert "plain" not in config["code_challenge_methods_supported"]
    assert all(isinstance(c, str) for c in config["capabilities"])
    assert STANDALONE_CAPABILITIES <= set(config["capabilities"])
    assert config["issuer"] and config["jwks_uri"]                 # sso-openid-connect advertised
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(engines.base))
    for name in ("authorization_endpoint", "token_endpoint", "introspection_endpoint", "revocation_endpoint",
                 "jwks_uri"):
        assert config[name].startswith(origin + "/")                # absolute; the FHIR endpoint's listener


def test_inferno_1_standalone_launch_grants_every_requested_scope(group1: tuple[Deployment, httpx.Response]) -> None:
    _, answer = group1
    assert answer.status_code == 200, answer.text
    assert {k: answer.headers[k] for k in NOT_STORED} == NOT_STORED
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["access_token"] and body["refresh_token"] and body["id_token"]
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600
    assert body["patient"] == PATIENT
    assert set(body["scope"].split()) == set(PATIENT_V2.split())


def test_inferno_1_unauthenticated_read_is_401_and_context_patient_is_readable(
    group1: tuple[Deployment, httpx.Response],
) -> None:
    deployment, answer = group1
    assert deployment.get(f"Patient/{PATIENT}", None).status_code == 401
    read = deployment.get(f"Patient/{PATIENT}", answer.json()["access_token"])
    assert read.status_code == 200 and read.json()["id"] == PATIENT


def test_inferno_1_openid_connect_id_token_and_fhir_user(group1: tuple[Deployment, httpx.Response]) -> None:
    deployment, answer = group1
    body = answer.json()
    claims = verified_id_token(deployment, body["id_token"], deployment.apps["standalone"].client_id)
    fhir_user = deployment.oauth.http.get(claims["fhirUser"], headers={
        "Authorization": f"Bearer {body['access_token']}", "Accept": "application/fhir+json"})
    assert fhir_user.status_code == 200 and fhir_user.json()["resourceType"] == "Patient"


def test_inferno_1_refresh_without_scope_then_patient_readable(group1: tuple[Deployment, httpx.Response]) -> None:
    deployment, answer = group1
    app = deployment.apps["standalone"]
    stolen = deployment.oauth.refresh(deployment.apps["public"], answer.json()["refresh_token"])
    assert stolen.status_code == 400 and stolen.json()["error"] == "invalid_grant"   # bound to its client
    refreshed = deployment.oauth.refresh(app, answer.json()["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert {k: refreshed.headers[k] for k in NOT_STORED} == NOT_STORED
    body = refreshed.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0 and body["refresh_token"]
    assert set(body["scope"].split()) == set(PATIENT_V2.split()) and body["patient"] == PATIENT
    assert deployment.get(f"Patient/{PATIENT}", body["access_token"]).status_code == 200
    assert deployment.oauth.refresh(app, "not-a-refresh-token").status_code in (400, 401)


def test_inferno_1_every_granted_type_is_searchable_by_patient(group1: tuple[Deployment, httpx.Response]) -> None:
    deployment, answer = group1
    token = answer.json()["access_token"]
    assert deployment.ids("Patient", token, _id=PATIENT) == {PATIENT}
    for resource_type in RECORD_TYPES:
        found = deployment.ids(resource_type, token, patient=PATIENT)
        assert all(rid.startswith("peter-") for rid in found), (resource_type, found)
        # R4 leaves Device out of the Patient compartment, so a patient/ token finds none of Peter's
        assert found or resource_type == "Device", resource_type


def verified_id_token(deployment: Deployment, token: str, client_id: str) -> dict[str, Any]:
    """OIDC-01/02 as Inferno goes: the issuer's configuration, its JWKS of bare keys, then the header,
    the payload and the RS256 signature."""
    http = deployment.oauth.http
    issuer = json.loads(jws.extract_compact(token.encode()).payload)["iss"]
    config = http.get(f"{issuer}/.well-known/openid-configuration").json()
    for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                 "subject_types_supported", "id_token_signing_alg_values_supported"):
        assert config.get(name), name
    assert config["issuer"] == issuer and "RS256" in config["id_token_signing_alg_values_supported"]
    jwks = http.get(config["jwks_uri"]).json()
    assert jwks["keys"] and all("d" not in key and "p" not in key for key in jwks["keys"])
    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256" and decoded.header["kid"] in {k["kid"] for k in jwks["keys"]}
    claims = decoded.claims
    assert claims["aud"] == client_id and claims["sub"] and claims["iat"] <= time.time() + 5 < claims["exp"]
    assert claims["fhirUser"].startswith(deployment.base + "/")
    return claims


# -- 2: Standalone Patient App, limited access ------------------------------------------------------


def test_inferno_2_limited_access_denies_the_deselected_types(sqlite: Deployment) -> None:
    """A clinician launches the standalone app, picks Peter and unticks two of the types."""
    requested = f"{STANDALONE} patient/Patient.rs patient/Condition.rs patient/Observation.rs patient/Goal.rs"
    unticked = {"patient/Observation.rs", "patient/Goal.rs"}
    asked = set(requested.split())
    consent = Consent(patient=PATIENT, keep=lambda scope: scope in asked - unticked)
    with sqlite.browser("dr.jones") as clinician:
        request, outcome = sqlite.authorize("standalone", requested, consent, browser=clinician)
    assert outcome.pages == ["login", "pick", "consent"] and asked <= set(outcome.offered)
    answer = sqlite.oauth.exchange(sqlite.apps["standalone"], outcome.params["code"], request.pkce.verifier)
    body = answer.json()
    assert body["patient"] == PATIENT and set(body["scope"].split()) == set(requested.split()) - unticked
    token = body["access_token"]
    assert sqlite.get(f"Patient/{PATIENT}", token).status_code == 200
    assert sqlite.get("Condition", token, patient=PATIENT).status_code == 200
    for denied in ("Observation", "Goal"):
        assert sqlite.get(denied, token, patient=PATIENT).status_code == 403


# -- 3: EHR Practitioner App -----------------------------------------------------------------------


def ehr_launch(deployment: Deployment, scope: str) -> dict[str, Any]:
    """The clinician launches the app from the EHR for Peter; the app authorizes by POST."""
    with deployment.browser("dr.jones") as browser:
        launched = query(browser.launch(deployment.apps["ehr"].client_id, PATIENT))
        assert launched["iss"] == deployment.base and launched["launch"]
        request, outcome = deployment.authorize("ehr", scope, browser=browser, post=True, launch=launched["launch"],
                                                aud=launched["iss"])
    assert outcome.pages == ["consent"]          # signed in at the launcher; no picker: the EHR chose
    assert outcome.params["state"] == request.state
    answer = deployment.oauth.exchange(deployment.apps["ehr"], outcome.params["code"], request.pkce.verifier)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_inferno_3_ehr_practitioner_app(sqlite: Deployment) -> None:
    assert EHR_CAPABILITIES <= set(sqlite.oauth.config["capabilities"])
    body = ehr_launch(sqlite, EHR_USER_V2)
    assert set(body["scope"].split()) == set(EHR_USER_V2.split())
    assert body["patient"] == PATIENT and "need_patient_banner" in body
    style = sqlite.oauth.http.get(body["smart_style_url"])
    assert style.status_code == 200 and isinstance(style.json(), dict)
    assert sqlite.get(f"Patient/{PATIENT}", None).status_code == 401
    assert sqlite.get(f"Patient/{PATIENT}", body["access_token"]).status_code == 200
    claims = verified_id_token(sqlite, body["id_token"], sqlite.apps["ehr"].client_id)
    assert claims["fhirUser"] == f"{sqlite.base}/Practitioner/{PRACTITIONER}"
    assert sqlite.oauth.http.get(claims["fhirUser"], headers={
        "Authorization": f"Bearer {body['access_token']}"}).status_code == 200
    refreshed = sqlite.oauth.refresh(sqlite.apps["ehr"], body["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert sqlite.get(f"Patient/{PATIENT}", refreshed.json()["access_token"]).status_code == 200
    assert sqlite.oauth.refresh(sqlite.apps["ehr"], "not-a-refresh-token").status_code in (400, 401)


# -- 6a-6k: additional authorization groups --------------------------------------------------------


def test_inferno_6a_public_client_standalone_launch_with_openid(sqlite: Deployment) -> None:
    body = sqlite.tokens("public", f"{STANDALONE} patient/*.rs")
    verified_id_token(sqlite, body["id_token"], sqlite.apps["public"].client_id)
    assert sqlite.get(f"Patient/{body['patient']}", body["access_token"]).status_code == 200


def test_inferno_6b_revoked_token_and_refresh_stop_working(sqlite: Deployment) -> None:
    body = sqlite.tokens("standalone", f"{STANDALONE} patient/*.rs")
    token, app = body["access_token"], sqlite.apps["standalone"]
    assert sqlite.get(f"Patient/{PATIENT}", token).status_code == 200
    # There is no page or command for the patient to revoke an app; the app revokes (RFC 7009)
    assert sqlite.oauth.revoke(app, token).status_code == 200
    # Grant status is cached per process for EHR_CLIENT_CACHE_SECONDS (5 s); Inferno allows an hour
    deadline = time.monotonic() + 15
    while sqlite.get(f"Patient/{PATIENT}", token).status_code != 401:
        assert time.monotonic() < deadline, "the revoked token still reads after 15 s"
        time.sleep(0.5)
    assert sqlite.oauth.refresh(app, body["refresh_token"]).status_code in (400, 401)
    assert sqlite.oauth.introspect(app, token).json() == {"active": False}


def test_inferno_6c_invalid_aud_gets_no_code(sqlite: Deployment) -> None:
    request, outcome = sqlite.authorize("standalone", PATIENT_V2, aud="https://inferno.healthit.gov/invalid_aud")
    assert outcome.redirect.startswith(sqlite.apps["standalone"].redirect_uri + "?")
    assert "code" not in outcome.params
    assert outcome.params["error"] == "invalid_request" and outcome.params["state"] == request.state


def test_authz07_a_denial_sends_access_denied_and_no_code(sqlite: Deployment) -> None:
    request, outcome = sqlite.authorize("standalone", PATIENT_V2, Consent(approve=False))
    assert outcome.pages == ["login", "consent"] and "code" not in outcome.params
    assert outcome.params["error"] == "access_denied" and outcome.params["state"] == request.state


def test_inferno_6d_invalid_code_and_invalid_client_id_are_refused(sqlite: Deployment) -> None:
    app = sqlite.apps["standalone"]
    request, outcome = sqlite.authorize("standalone", PATIENT_V2)
    code = outcome.params["code"]
    assert sqlite.oauth.exchange(app, "INVALID_CODE", request.pkce.verifier).status_code == 400
    stranger = replace(app, client_id="INVALID_CLIENT_ID")
    refused = sqlite.oauth.exchange(stranger, code, request.pkce.verifier)
    assert refused.status_code in (400, 401) and refused.json()["error"] == "invalid_client"
    assert sqlite.oauth.exchange(app, code, request.pkce.verifier).status_code == 200   # still the app's
    assert sqlite.oauth.exchange(app, code, request.pkce.verifier).status_code == 400   # and one-time


@pytest.mark.parametrize("verifier", ["missing", "blank", "wrong", "the challenge"])
def test_inferno_6e_invalid_pkce_verifier_is_refused(sqlite: Deployment, verifier: str) -> None:
    request, outcome = sqlite.authorize("standalone", PATIENT_V1)
    sent = {"missing": None, "blank": "", "wrong": f"{uuid.uuid4()}-{uuid.uuid4()}",
            "the challenge": request.pkce.challenge}[verifier]
    refused = sqlite.oauth.exchange(sqlite.apps["standalone"], outcome.params["code"], sent)
    assert refused.status_code in (400, 401) and "access_token" not in refused.json()


def test_inferno_6f_ehr_launch_with_patient_scopes(sqlite: Deployment) -> None:
    scope = "launch openid fhirUser offline_access " + " ".join(f"patient/{t}.rs" for t in G10_TYPES)
    body = ehr_launch(sqlite, scope)
    assert set(body["scope"].split()) == set(scope.split()) and body["patient"] == PATIENT
    assert sqlite.get(f"Patient/{PATIENT}", body["access_token"]).status_code == 200
    assert sqlite.get(f"Patient/{OTHER_PATIENT}", body["access_token"]).status_code == 404


def introspected(sqlite: Deployment) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """6g: a new launch, its token introspected by the app (any authenticated client may)."""
    body = sqlite.tokens("standalone", PATIENT_V2)
    answer = sqlite.oauth.introspect(sqlite.apps["standalone"], body["access_token"])
    assert answer.status_code == 200, answer.text
    return body, answer.json(), verified_id_token(sqlite, body["id_token"], sqlite.apps["standalone"].client_id)


def test_inferno_6g_token_introspection(sqlite: Deployment) -> None:
    body, active, id_claims = introspected(sqlite)
    assert active["active"] is True
    assert active["scope"] == body["scope"] and active["client_id"] == sqlite.apps["standalone"].client_id
    assert isinstance(active["exp"], int) and abs(active["exp"] - (time.time() + body["expires_in"])) < 30
    assert active["patient"] == body["patient"]
    assert (active["iss"], active["sub"]) == (id_claims["iss"], id_claims["sub"])      # SHALL, from the id_token
    for invalid in ("not-a-token", body["access_token"][:-4] + "AAAA"):
        answer = sqlite.oauth.introspect(sqlite.apps["standalone"], invalid)
        assert answer.status_code == 200 and answer.json() == {"active": False}


def test_inferno_6g_introspection_fhir_user_is_the_id_token_claim(sqlite: Deployment) -> None:
    _, active, id_claims = introspected(sqlite)
    assert active["fhirUser"] == id_claims["fhirUser"]


def test_inferno_6h_asymmetric_client_launch_and_refresh(sqlite: Deployment) -> None:
    app = sqlite.apps["asymmetric"]
    body = sqlite.tokens("asymmetric", f"{STANDALONE} patient/*.rs")
    verified_id_token(sqlite, body["id_token"], app.client_id)
    assert sqlite.get(f"Patient/{PATIENT}", body["access_token"]).status_code == 200
    refreshed = sqlite.oauth.refresh(app, body["refresh_token"])            # a new signed assertion
    assert refreshed.status_code == 200, refreshed.text
    assert sqlite.get(f"Patient/{PATIENT}", refreshed.json()["access_token"]).status_code == 200
    assert sqlite.oauth.refresh(app, "not-a-refresh-token").status_code in (400, 401)


def test_inferno_6i_v1_scopes_are_granted_as_v1(sqlite: Deployment) -> None:
    body = sqlite.tokens("standalone", PATIENT_V1)
    assert set(body["scope"].split()) == set(PATIENT_V1.split())           # answered in v1, not as .rs
    assert sqlite.get(f"Patient/{PATIENT}", None).status_code == 401
    for resource_type in RECORD_TYPES:
        assert sqlite.get(resource_type, body["access_token"], patient=PATIENT).status_code == 200


# The two disjoint (g)(10) sets [SCOPE-04]
FINE_GRAINED = {
    1: {"Condition": ["encounter-diagnosis", "health-concern"], "Observation": ["laboratory", "social-history"]},
    2: {"Condition": ["problem-list-item"], "Observation": ["vital-signs", "survey", "sdoh"]},
}


@pytest.mark.parametrize("group", [1, 2])
def test_inferno_6j_fine_grained_scopes_return_only_their_categories(sqlite: Deployment, group: int) -> None:
    baseline = sqlite.tokens("standalone", f"{STANDALONE} patient/*.rs")["access_token"]
    scopes = [s for t, codes in FINE_GRAINED[group].items() for s in granular(t, codes)]
    body = sqlite.tokens("standalone", " ".join([STANDALONE, "patient/Patient.rs", *scopes]))
    assert set(scopes) <= set(body["scope"].split())
    for resource_type, codes in FINE_GRAINED[group].items():
        everything = sqlite.ids(resource_type, baseline, patient=PATIENT)
        expected = {f"peter-{code}" for code in codes}
        assert expected <= everything
        assert sqlite.ids(resource_type, body["access_token"], patient=PATIENT) == expected
        for code in (OBSERVATION_CATEGORIES if resource_type == "Observation" else CONDITION_CATEGORIES):
            by_category = sqlite.ids(resource_type, body["access_token"], patient=PATIENT, category=code)
            assert by_category == (expected & sqlite.ids(resource_type, baseline, patient=PATIENT, category=code))
            assert sqlite.get(f"{resource_type}/peter-{code}", body["access_token"]).status_code == (
                200 if code in codes else 404)


def test_inferno_6k_granular_scopes_requested_are_offered_and_a_subset_narrows(sqlite: Deployment) -> None:
    offered = granular("Condition", list(CONDITION_CATEGORIES)) + granular("Observation", list(OBSERVATION_CATEGORIES))
    chosen = set(granular("Condition", ["problem-list-item"]) + granular("Observation", ["laboratory"]))
    request = " ".join([STANDALONE, "patient/Patient.rs", *offered])
    keep = chosen | {"patient/Patient.rs", "offline_access"}
    authz, outcome = sqlite.authorize("standalone", request, Consent(keep=lambda s: s in keep))
    assert set(offered) <= set(outcome.offered)
    body = sqlite.oauth.exchange(sqlite.apps["standalone"], outcome.params["code"], authz.pkce.verifier).json()
    granted = set(body["scope"].split())
    assert granted & set(offered) == chosen and "patient/Patient.rs" in granted
    assert sqlite.ids("Observation", body["access_token"], patient=PATIENT) == {"peter-laboratory"}
    assert sqlite.ids("Condition", body["access_token"], patient=PATIENT) == {"peter-problem-list-item"}


def test_inferno_6k_resource_level_request_offers_sub_resource_scopes(sqlite: Deployment) -> None:
    requested = f"{STANDALONE} patient/Condition.rs patient/Observation.rs patient/Patient.rs"
    sub_resource = granular("Condition", ["encounter-diagnosis", "problem-list-item", "health-concern"]) + granular(
        "Observation", ["clinical-test", "laboratory", "social-history", "sdoh", "survey", "vital-signs"])
    choose = set(granular("Condition", ["problem-list-item"]) + granular("Observation", ["vital-signs"]))
    keep = choose | {"patient/Patient.rs", "offline_access"}
    request, outcome = sqlite.authorize("standalone", requested, Consent(keep=lambda s: s in keep))
    assert set(sub_resource) <= set(outcome.offered), outcome.offered
    body = sqlite.oauth.exchange(sqlite.apps["standalone"], outcome.params["code"], request.pkce.verifier).json()
    granted = body["scope"].split()
    assert not {"patient/Condition.rs", "patient/Observation.rs"} & set(granted)
    assert choose <= set(granted) and "patient/Patient.rs" in granted

