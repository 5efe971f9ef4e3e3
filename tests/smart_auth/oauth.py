"""Shared pieces for authorization tests: registered clients and users, codes and tokens minted the
way the authorize step and the token endpoint mint them, and an in-process HTTPS client."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jwk

from ehr.api.services import Services
from ehr.context import operator_context, system_context
from ehr.store.clients import Client, Registration
from smart_auth.grants import AuthGrant
from smart_auth.users import User
from tests.conftest import BASE, make_client
from tests.smart_auth.jwt_helpers import make_assertion, make_client_key

TOKEN_URL = "https://ehr.test/oauth/token"
REDIRECT = "https://app.example/cb"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def verifier_and_challenge() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def add_user(services: Services, role: str = "clinician", fhir_user: str | None = None,
                   username: str = "dr.who") -> User:
    return await services.auth.users.add(
        operator_context(), username, "Dr Who", role, "correct horse battery staple", fhir_user=fhir_user
    )


async def add_patient(services: Services, pid: str, family: str = "Chalmers") -> None:
    body = {"resourceType": "Patient", "id": pid, "name": [{"family": family}], "gender": "female"}
    await services.store.update(system_context("test"), "Patient", pid, body)


async def add_observation(services: Services, oid: str, patient: str, category: str = "laboratory") -> None:
    body = {
        "resourceType": "Observation", "id": oid, "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category,
        }]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }
    await services.store.update(system_context("test"), "Observation", oid, body)


async def public_app(services: Services, scopes: str = "patient/*.cruds user/*.cruds openid fhirUser "
                     "launch launch/patient offline_access online_access") -> Client:
    client, _ = await services.clients.register(
        operator_context(),
        Registration("Public app", scopes, auth_method="none", redirect_uris=[REDIRECT],
                     launch_uri="https://app.example/launch"),
    )
    return client


async def secret_app(services: Services, scopes: str = "patient/*.rs user/*.rs openid fhirUser launch/patient "
                     "offline_access") -> tuple[Client, str]:
    client, secret = await services.clients.register(
        operator_context(),
        Registration("Confidential app", scopes, auth_method="client_secret_basic", redirect_uris=[REDIRECT]),
    )
    assert secret is not None
    return client, secret


@dataclass
class Backend:
    client: Client
    key: jwk.Key
    kid: str

    def assertion(self, **kwargs: Any) -> str:
        return make_assertion(self.key, kid=self.kid, client_id=self.client.id, audience=TOKEN_URL, alg="RS384",
                              **kwargs)

    def form(self, scope: str = "system/*.rs", **kwargs: Any) -> dict[str, str]:
        return {
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": self.assertion(**kwargs),
        }


async def backend(services: Services, scopes: str = "system/*.cruds") -> Backend:
    key, jwks = make_client_key("RS384")
    client, _ = await services.clients.register(
        operator_context(), Registration("Backend", scopes, auth_method="private_key_jwt", jwks=jwks)
    )
    return Backend(client, key, jwks["keys"][0]["kid"])


async def code_for(
    services: Services, client: Client, user: User | None, scopes: str, *, patient: str | None = None,
    challenge: str, nonce: str | None = None,
) -> tuple[str, AuthGrant]:
    """A code as the authorize step issues it after consent."""
    grant, _ = await services.auth.grants.create(
        client_id=client.id, user_id=user.id if user else None, scopes=scopes, patient=patient
    )
    code = await services.auth.grants.issue_code(grant, redirect_uri=REDIRECT, challenge=challenge, nonce=nonce)
    return code, grant


async def mint(
    services: Services, client: Client, user: User | None, scopes: str, *, patient: str | None = None,
    cnf: str | None = None,
) -> str:
    """An access token as the token endpoint issues it."""
    grant, _ = await services.auth.grants.create(
        client_id=client.id, user_id=user.id if user else None, scopes=scopes, patient=patient, cnf=cnf
    )
    token, _ = services.auth.access_token(grant, client, user, scopes)
    return token


async def https(services: Services, pem: str | None = None) -> httpx.AsyncClient:
    """An in-process client at https://ehr.test/ (optionally presenting a client certificate)."""
    client = await make_client(services, pem)
    client.base_url = httpx.URL(BASE.rsplit("/fhir", 1)[0] + "/")
    return client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
