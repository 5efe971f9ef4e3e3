"""Discovery and CORS, item by item of ../shared/SMART-CHECKLIST.md b1, b5, b8 and MTLS-04."""

from __future__ import annotations

import pytest

from ehr.api.services import Services
from smart_auth.discovery import CAPABILITIES
from tests.smart_auth.oauth import FORM, https, public_app

WELL_KNOWN = "fhir/.well-known/smart-configuration"


@pytest.mark.parametrize("accept", [None, "*/*", "application/fhir+json", "application/json", "text/html"])
async def test_disc01_served_as_json_without_auth_whatever_accept(services: Services, accept: str | None) -> None:
    async with await https(services) as http:
        response = await http.get(WELL_KNOWN, headers={"Accept": accept} if accept else {})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")


async def test_disc02_disc03_disc04_disc05_required_fields_absolute(services: Services) -> None:
    async with await https(services) as http:
        config = (await http.get(WELL_KNOWN)).json()
    for name in ("token_endpoint", "authorization_endpoint", "jwks_uri", "introspection_endpoint",
                 "revocation_endpoint"):
        assert config[name].startswith("https://ehr.test/"), name  # DISC-02: absolute
    assert {"authorization_code", "client_credentials"} <= set(config["grant_types_supported"])
    assert all(isinstance(c, str) for c in config["capabilities"])
    assert config["code_challenge_methods_supported"] == ["S256"]  # plain never
    assert config["issuer"] == "https://ehr.test/fhir"  # sso-openid-connect is advertised


async def test_disc06_disc07_optional_fields_and_onc_capabilities(services: Services) -> None:
    async with await https(services) as http:
        config = (await http.get(WELL_KNOWN)).json()
    required = {
        "launch-ehr", "launch-standalone", "authorize-post", "client-public", "client-confidential-symmetric",
        "client-confidential-asymmetric", "sso-openid-connect", "context-banner", "context-style",
        "context-ehr-patient", "context-standalone-patient", "permission-offline", "permission-patient",
        "permission-user", "permission-v1", "permission-v2",
    }
    assert required <= set(config["capabilities"]) == set(CAPABILITIES)
    assert {"client_secret_basic", "private_key_jwt", "tls_client_auth"} <= set(
        config["token_endpoint_auth_methods_supported"]
    )
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])
    assert config["response_types_supported"] == ["code"]
    assert "launch/patient" in config["scopes_supported"]


async def test_mtls04_bound_tokens_advertised(services: Services) -> None:
    async with await https(services) as http:
        config = (await http.get(WELL_KNOWN)).json()
    assert config["tls_client_certificate_bound_access_tokens"] is True


async def test_disc08_capability_statement_carries_oauth_uris(services: Services) -> None:
    async with await https(services) as http:
        statement = (await http.get("fhir/metadata")).json()
    security = statement["rest"][0]["security"]
    codes = {c["code"] for s in security["service"] for c in s["coding"]}
    assert "SMART-on-FHIR" in codes
    (uris,) = [e for e in security["extension"] if e["url"].endswith("/oauth-uris")]
    found = {e["url"]: e["valueUri"] for e in uris["extension"]}
    assert found["token"] == "https://ehr.test/oauth/token"
    assert found["authorize"] == "https://ehr.test/oauth/authorize"


async def test_oidc01_openid_configuration_and_bare_jwks(services: Services) -> None:
    async with await https(services) as http:
        config = (await http.get("fhir/.well-known/openid-configuration")).json()
        jwks = (await http.get("oauth/jwks")).json()
    assert "RS256" in config["id_token_signing_alg_values_supported"]
    for name in ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "response_types_supported",
                 "subject_types_supported"):
        assert config[name]
    (key,) = jwks["keys"]
    assert set(key) == {"kty", "n", "e", "kid", "use", "alg"}  # public parts only


@pytest.mark.parametrize("path", [WELL_KNOWN, "fhir/metadata", "fhir/.well-known/openid-configuration",
                                  "oauth/jwks"])
async def test_cors01_public_documents_allow_any_origin(services: Services, path: str) -> None:
    async with await https(services) as http:
        response = await http.get(path, headers={"Origin": "https://anywhere.example"})
        preflight = await http.options(path, headers={"Origin": "https://anywhere.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"


async def test_cors02_token_endpoint_and_api_allow_registered_origins_only(services: Services) -> None:
    await public_app(services)  # redirect URI https://app.example/cb
    async with await https(services) as http:
        for path in ("oauth/token", "fhir/Patient"):
            registered = await http.options(path, headers={"Origin": "https://app.example",
                                                           "Access-Control-Request-Method": "POST",
                                                           "Access-Control-Request-Headers": "authorization"})
            assert registered.status_code == 204
            assert registered.headers["access-control-allow-origin"] == "https://app.example"
            assert "authorization" in registered.headers["access-control-allow-headers"]
            stranger = await http.options(path, headers={"Origin": "https://evil.example",
                                                         "Access-Control-Request-Method": "POST"})
            assert stranger.status_code == 403 and "access-control-allow-origin" not in stranger.headers
        origin = {"Origin": "https://app.example"}
        token = await http.post("oauth/token", data={"grant_type": "x"}, headers={**FORM, **origin})
        assert token.headers["access-control-allow-origin"] == "https://app.example"
        api = await http.get("fhir/Patient", headers={"Origin": "https://app.example"})
        assert api.status_code == 401 and api.headers["access-control-allow-origin"] == "https://app.example"
        assert "etag" in api.headers["access-control-expose-headers"]
