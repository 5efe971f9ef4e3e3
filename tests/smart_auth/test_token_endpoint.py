"""The token endpoint, introspection, revocation and the FHIR endpoint's token checks, item by item
of ../shared/SMART-CHECKLIST.md (b3, b6, b7, b9); both database engines."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from ehr.api.services import Services
from ehr.context import operator_context
from ehr.pki import DevPki, certificate_thumbprint
from ehr.store.clients import Registration
from tests.audit.test_review import issue_pem
from tests.smart_auth.oauth import (
    FORM,
    REDIRECT,
    add_patient,
    add_user,
    backend,
    bearer,
    code_for,
    https,
    mint,
    public_app,
    secret_app,
    verifier_and_challenge,
)


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


async def exchange(http: httpx.AsyncClient, form: dict[str, str], **kwargs: object) -> httpx.Response:
    return await http.post("oauth/token", data=form, headers={**FORM, **kwargs.pop("headers", {})}, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def launched(services: Services) -> dict[str, object]:
    """A public app, a clinician, a patient and a code for patient/*.rs with offline_access."""
    await add_patient(services, "p1")
    app = await public_app(services)
    user = await add_user(services)
    verifier, challenge = verifier_and_challenge()
    scopes = "patient/*.rs openid fhirUser launch/patient offline_access"
    code, grant = await code_for(services, app, user, scopes, patient="p1", challenge=challenge, nonce="n-1")
    return {"app": app, "user": user, "verifier": verifier, "challenge": challenge, "code": code, "grant": grant}


def code_form(launched: dict[str, object], **overrides: str) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": str(launched["code"]), "redirect_uri": REDIRECT,
            "client_id": launched["app"].id, "code_verifier": str(launched["verifier"])}  # type: ignore[attr-defined]
    form.update(overrides)
    return {k: v for k, v in form.items() if v != "<absent>"}


async def test_tok01_tok03_tok04_tok05_tok06_code_exchange(services: Services, launched: dict[str, object]) -> None:
    async with await https(services) as http:
        response = await exchange(http, code_form(launched))
        assert response.status_code == 200, response.text
        assert response.headers["cache-control"] == "no-store" and response.headers["pragma"] == "no-cache"
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["scope"] == "patient/*.rs openid fhirUser launch/patient offline_access"
        assert 0 < body["expires_in"] <= 300
        assert body["patient"] == "p1" and body["need_patient_banner"] is True
        assert body["refresh_token"] and body["id_token"]
        # TOK-05: the context patient is readable with the token, not without
        assert (await http.get("fhir/Patient/p1", headers=bearer(body["access_token"]))).status_code == 200
        refused = await http.get("fhir/Patient/p1")
        assert refused.status_code == 401
        # TOK-06: the style URL resolves to JSON
        style = await http.get(body["smart_style_url"])
        assert style.status_code == 200 and isinstance(style.json(), dict)
        # AUTHZ-04: codes are one-time, and a replay revokes what the code gave
        again = await exchange(http, code_form(launched))
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
        after = await http.get("fhir/Patient/p1", headers=bearer(body["access_token"]))
        assert after.status_code == 401


@pytest.mark.parametrize("verifier", ["<absent>", "", "wrong" * 10, "<challenge>"])
async def test_tok01_invalid_pkce_verifier_refused(
    services: Services, launched: dict[str, object], verifier: str
) -> None:
    value = str(launched["challenge"]) if verifier == "<challenge>" else verifier
    async with await https(services) as http:
        response = await exchange(http, code_form(launched, code_verifier=value))
    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_grant", "invalid_request")


async def test_tok02_invalid_code_and_invalid_client(services: Services, launched: dict[str, object]) -> None:
    async with await https(services) as http:
        bad_code = await exchange(http, code_form(launched, code="not-a-code"))
        bad_client = await exchange(http, code_form(launched, client_id="no-such-client"))
        bad_redirect = await exchange(http, code_form(launched, redirect_uri="https://app.example/other"))
    assert bad_code.status_code == 400 and bad_code.json()["error"] == "invalid_grant"
    assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"
    assert bad_redirect.json()["error"] == "invalid_grant"


async def test_tok02_symmetric_client_authenticates_with_basic(services: Services) -> None:
    await add_patient(services, "p1")
    app, secret = await secret_app(services)
    user = await add_user(services)
    verifier, challenge = verifier_and_challenge()
    code, _ = await code_for(services, app, user, "patient/Patient.rs", patient="p1", challenge=challenge)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    async with await https(services) as http:
        wrong = await exchange(http, form, auth=(app.id, "not-the-secret"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        no_auth = await exchange(http, {**form, "client_id": app.id})
        assert no_auth.status_code == 401  # a confidential client must authenticate
        right = await exchange(http, form, auth=(app.id, secret))
    assert right.status_code == 200, right.text


async def test_tok07_refresh(services: Services, launched: dict[str, object]) -> None:
    async with await https(services) as http:
        first = (await exchange(http, code_form(launched))).json()
        app_id = launched["app"].id  # type: ignore[attr-defined]
        refreshed = await exchange(http, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                          "client_id": app_id})
        assert refreshed.status_code == 200, refreshed.text
        body = refreshed.json()
        assert body["patient"] == "p1" and body["scope"] == first["scope"]
        assert (await http.get("fhir/Patient/p1", headers=bearer(body["access_token"]))).status_code == 200
        narrower = await exchange(http, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                         "client_id": app_id, "scope": "patient/Patient.rs"})
        assert narrower.status_code == 200 and narrower.json()["scope"] == "patient/Patient.rs"
        wider = await exchange(http, {"grant_type": "refresh_token", "refresh_token": narrower.json()["refresh_token"],
                                      "client_id": app_id, "scope": "patient/*.cruds"})
        assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"
        random = await exchange(http, {"grant_type": "refresh_token", "refresh_token": "random", "client_id": app_id})
        assert random.status_code == 400 and random.json()["error"] == "invalid_grant"


async def test_tok07_a_rotated_refresh_token_used_again_revokes_the_grant(
    services: Services, launched: dict[str, object]
) -> None:
    """Refresh token rotation with reuse detection (OAuth 2.0 Security BCP 4.14): the old token
    coming back means one of the two holders is not the client; both lose the grant."""
    app_id = launched["app"].id  # type: ignore[attr-defined]
    async with await https(services) as http:
        first = (await exchange(http, code_form(launched))).json()
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": app_id}
        second = (await exchange(http, form)).json()
        reused = await exchange(http, form)
        assert reused.status_code == 400 and "already used" in reused.json()["error_description"]
        assert (await http.get("fhir/Patient/p1", headers=bearer(second["access_token"]))).status_code == 401
        latest = await exchange(http, {**form, "refresh_token": second["refresh_token"]})
        assert latest.status_code == 400


async def test_tok08_revocation_ends_access_and_refresh(services: Services, launched: dict[str, object]) -> None:
    async with await https(services) as http:
        body = (await exchange(http, code_form(launched))).json()
        app_id = launched["app"].id  # type: ignore[attr-defined]
        revoked = await http.post("oauth/revoke", data={"token": body["refresh_token"], "client_id": app_id},
                                  headers=FORM)
        assert revoked.status_code == 200
        assert (await http.get("fhir/Patient/p1", headers=bearer(body["access_token"]))).status_code == 401
        refresh = await exchange(http, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
                                        "client_id": app_id})
        assert refresh.status_code == 400


async def test_intro01_intro02_introspection(services: Services, launched: dict[str, object]) -> None:
    app, secret = await secret_app(services)
    async with await https(services) as http:
        body = (await exchange(http, code_form(launched))).json()
        active = await http.post("oauth/introspect", data={"token": body["access_token"]}, headers=FORM,
                                 auth=(app.id, secret))
        inactive = await http.post("oauth/introspect", data={"token": "not-a-token"}, headers=FORM,
                                   auth=(app.id, secret))
        anonymous = await http.post("oauth/introspect", data={"token": body["access_token"]}, headers=FORM)
    found = active.json()
    assert found["active"] is True
    assert found["scope"] == body["scope"] and found["patient"] == "p1"
    assert found["client_id"] == launched["app"].id and found["exp"] > time.time()  # type: ignore[attr-defined]
    assert inactive.json() == {"active": False}
    assert anonymous.status_code == 401


async def test_oidc01_oidc02_id_token(services: Services, launched: dict[str, object]) -> None:
    async with await https(services) as http:
        body = (await exchange(http, code_form(launched))).json()
        config = (await http.get("fhir/.well-known/openid-configuration")).json()
        keys = (await http.get(config["jwks_uri"].removeprefix("https://ehr.test/"))).json()
    assert config["issuer"] == "https://ehr.test/fhir"
    assert all("d" not in key and "p" not in key for key in keys["keys"])  # bare public keys only
    from joserfc.jwk import KeySet

    decoded = jwt.decode(body["id_token"], KeySet.import_key_set(keys), algorithms=["RS256"])
    assert decoded.header["alg"] == "RS256"
    claims = decoded.claims
    assert claims["iss"] == config["issuer"] and claims["aud"] == launched["app"].id  # type: ignore[attr-defined]
    assert claims["sub"] == launched["user"].id and claims["nonce"] == "n-1"  # type: ignore[attr-defined]


async def test_bs01_backend_services(services: Services) -> None:
    service = await backend(services)
    async with await https(services) as http:
        ok = await exchange(http, service.form("system/Patient.rs"))
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["scope"] == "system/Patient.rs" and body["expires_in"] <= 300 and "refresh_token" not in body
        assert (await http.get("fhir/Patient?_count=1", headers=bearer(body["access_token"]))).status_code == 200
        assert (await http.get("fhir/Observation", headers=bearer(body["access_token"]))).status_code == 403
        bad_grant = await exchange(http, {**service.form(), "grant_type": "password"})
        bad_type = await exchange(http, {**service.form(), "client_assertion_type": "urn:nope"})
        bad_jwt = await exchange(http, {**service.form(), "client_assertion": "e30.e30.e30"})
        replay_form = service.form(jti="same")
        first = await exchange(http, replay_form)
        replay = await exchange(http, {**replay_form, "client_assertion": service.assertion(jti="same")})
    assert bad_grant.status_code == 400
    assert bad_grant.json()["error"] in ("unsupported_grant_type", "unauthorized_client")
    assert bad_type.status_code == 401 and bad_type.json()["error"] == "invalid_client"
    assert bad_jwt.status_code == 401 and bad_jwt.json()["error"] == "invalid_client"
    assert first.status_code == 200
    assert replay.status_code == 401  # TOK-09: a replayed jti is refused


async def test_scope07_system_scopes_only_by_client_credentials(services: Services) -> None:
    with pytest.raises(Exception):  # noqa: B017,PT011 - registration refuses it
        await services.clients.register(
            operator_context(), Registration("x", "system/*.rs", auth_method="none", redirect_uris=[REDIRECT],
                                             grant_types=["client_credentials"])
        )
    service = await backend(services, "system/*.rs")
    async with await https(services) as http:
        body = (await exchange(http, service.form("system/*.rs patient/*.rs user/*.rs"))).json()
    assert body["scope"] == "system/*.rs"


async def test_mtls01_mtls02_mtls03_mtls05_certificate_bound_tokens(services: Services, pki: DevPki) -> None:
    pem = pki.client_cert.read_text()
    other = issue_pem(pki, "other-client")
    client, _ = await services.clients.register(
        operator_context(),
        Registration("mTLS backend", "system/*.rs", auth_method="tls_client_auth",
                     cert_thumbprint=certificate_thumbprint(pem)),
    )
    await add_patient(services, "p1")
    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs", "client_id": client.id}
    async with await https(services, pem) as with_cert, await https(services, other) as wrong_cert, \
            await https(services) as no_cert:
        refused = await exchange(wrong_cert, form)
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
        issued = await exchange(with_cert, form)
        assert issued.status_code == 200, issued.text
        access = issued.json()["access_token"]
        assert claims_of(access)["cnf"] == {"x5t#S256": certificate_thumbprint(pem)}
        assert (await with_cert.get("fhir/Patient/p1", headers=bearer(access))).status_code == 200
        for client_without in (wrong_cert, no_cert):
            response = await client_without.get("fhir/Patient/p1", headers=bearer(access))
            assert response.status_code == 401
            assert "invalid_token" in response.headers["www-authenticate"]
        # MTLS-05: a forwarded-certificate header from the network is never trusted
        forwarded = await no_cert.get("fhir/Patient/p1", headers={**bearer(access), "X-SSL-Client-Cert": pem,
                                                                   "X-Forwarded-Client-Cert": pem})
        assert forwarded.status_code == 401


async def test_mtls06_bound_refresh_token_needs_the_same_certificate(
    services: Services, pki: DevPki, launched: dict[str, object]
) -> None:
    pem = pki.client_cert.read_text()
    app_id = launched["app"].id  # type: ignore[attr-defined]
    async with await https(services, pem) as with_cert, await https(services) as no_cert:
        body = (await exchange(with_cert, code_form(launched))).json()
        assert claims_of(body["access_token"])["cnf"] == {"x5t#S256": certificate_thumbprint(pem)}
        form = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": app_id}
        assert (await exchange(no_cert, form)).status_code == 400
        assert (await exchange(with_cert, form)).status_code == 200


async def test_require_bound_system_tokens_policy(services: Services) -> None:
    services.settings.require_bound_system_tokens = True
    service = await backend(services)
    async with await https(services) as http:
        refused = await exchange(http, service.form())
    assert refused.status_code == 401


@pytest.mark.parametrize("forgery", ["none", "hs256", "expired", "audience", "id_token", "tampered", "issuer"])
async def test_forged_and_misused_tokens_refused(services: Services, launched: dict[str, object], forgery: str) -> None:
    """Signature, expiry, audience, issuer, type; alg none and algorithm confusion refused."""
    app, user = launched["app"], launched["user"]
    good = await mint(services, app, user, "patient/*.rs", patient="p1")  # type: ignore[arg-type]
    header, payload, signature = good.split(".")
    claims = claims_of(good)

    def encode(part: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()

    if forgery == "none":
        token = f"{encode({'alg': 'none', 'typ': 'at+jwt'})}.{payload}."
    elif forgery == "hs256":
        secret = json.dumps(services.auth.keys.jwks()["keys"][0]).encode()
        token = jwt.encode({"alg": "HS256", "typ": "at+jwt"}, claims, OctKey.import_key(secret),
                           algorithms=["HS256"])
    elif forgery == "expired":
        token = services.auth.keys.sign({**claims, "exp": int(time.time()) - 5}, typ="at+jwt")
    elif forgery == "audience":
        token = services.auth.keys.sign({**claims, "aud": "https://elsewhere/fhir"}, typ="at+jwt")
    elif forgery == "issuer":
        token = services.auth.keys.sign({**claims, "iss": "https://elsewhere/fhir"}, typ="at+jwt")
    elif forgery == "id_token":
        token = services.auth.keys.sign(claims)  # typ JWT: an id_token is not an access token
    else:
        token = f"{header}.{encode({**claims, 'patient': 'p2'})}.{signature}"
    async with await https(services) as http:
        assert (await http.get("fhir/Patient/p1", headers=bearer(good))).status_code == 200
        response = await http.get("fhir/Patient/p1", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_every_issue_and_refusal_is_audited(services: Services) -> None:
    from tests.audit.helpers import events

    service = await backend(services)
    async with await https(services) as http:
        await exchange(http, service.form())
        await exchange(http, {**service.form(), "client_assertion": "e30.e30.e30"})
    tokens = [e for e in await events(services.db, services.keys) if e["subtype"][0]["code"] == "token"]
    assert [e["outcome"] for e in tokens] == ["0", "4"]
    assert all("client_assertion" not in json.dumps(e) and "access_token" not in json.dumps(e) for e in tokens)


async def test_disabled_user_or_client_ends_its_tokens(services: Services, launched: dict[str, object]) -> None:
    app, user = launched["app"], launched["user"]
    token = await mint(services, app, user, "patient/*.rs", patient="p1")  # type: ignore[arg-type]
    async with await https(services) as http:
        assert (await http.get("fhir/Patient/p1", headers=bearer(token))).status_code == 200
        await services.auth.users.set_disabled(operator_context(), user.id, True)  # type: ignore[attr-defined]
        assert (await http.get("fhir/Patient/p1", headers=bearer(token))).status_code == 401
        await services.auth.users.set_disabled(operator_context(), user.id, False)  # type: ignore[attr-defined]
        await services.clients.set_disabled(operator_context(), app.id, True)  # type: ignore[attr-defined]
        assert (await http.get("fhir/Patient/p1", headers=bearer(token))).status_code == 401


async def test_scope06_fhiruser_in_id_token_resolves_and_launch_scopes_grant_no_data(services: Services) -> None:
    from ehr.context import system_context

    await services.store.update(system_context("test"), "Practitioner", "dr1",
                                {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Who"}]})
    app = await public_app(services)
    user = await add_user(services, fhir_user="Practitioner/dr1")
    verifier, challenge = verifier_and_challenge()
    code, _ = await code_for(services, app, user, "openid fhirUser user/Practitioner.rs", challenge=challenge)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": app.id,
            "code_verifier": verifier}
    launch_only = await mint(services, app, user, "launch launch/patient openid fhirUser")
    async with await https(services) as http:
        body = (await exchange(http, form)).json()
        fhir_user = claims_of(body["id_token"])["fhirUser"]
        assert fhir_user == "https://ehr.test/fhir/Practitioner/dr1"
        path = str(fhir_user).removeprefix("https://ehr.test/")
        resolved = await http.get(path, headers=bearer(body["access_token"]))
        assert resolved.status_code == 200 and resolved.json()["id"] == "dr1"
        denied = await http.get("fhir/Practitioner/dr1", headers=bearer(launch_only))
    assert denied.status_code == 403


async def test_scope04_a_granular_query_the_server_cannot_evaluate_is_refused(services: Services) -> None:
    service = await backend(services, "system/*.rs")
    async with await https(services) as http:
        refused = await exchange(http, service.form("system/Observation.rs?no-such-param=1"))
        granted = await exchange(http, service.form("system/Observation.rs?category=laboratory"))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    assert granted.status_code == 200 and granted.json()["scope"] == "system/Observation.rs?category=laboratory"


async def test_tok07_online_access_refresh_ends_with_the_sign_in_session(services: Services) -> None:
    await add_patient(services, "p1")
    app = await public_app(services)
    user = await add_user(services)
    session = await services.auth.grants.start_session(user.id)
    _, refresh = await services.auth.grants.create(
        client_id=app.id, user_id=user.id, scopes="patient/*.rs online_access", patient="p1",
        refresh_seconds=3600, session=session,
    )
    form = {"grant_type": "refresh_token", "refresh_token": str(refresh), "client_id": app.id}
    async with await https(services) as http:
        first = await exchange(http, form)
        assert first.status_code == 200, first.text
        await services.auth.grants.end_session(session)
        after = await exchange(http, {**form, "refresh_token": first.json()["refresh_token"]})
    assert after.status_code == 400 and "session" in after.json()["error_description"]
