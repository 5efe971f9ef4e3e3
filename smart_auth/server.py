"""The authorization server's parts and the rules its endpoints share: who the client is (client
authentication at the token, introspection and revocation endpoints), how tokens are issued, how
errors are answered (RFC 6749 section 5.2) and how every decision is audited.

authlib's grant framework is synchronous (its callbacks cannot await the database), so the flows
are written here as async code; every signature, key and PKCE transform is joserfc's or authlib's
(docs/adr/0009-smart-authorization.md).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote

from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.requests import Request
from starlette.responses import JSONResponse

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext, anonymous_context
from ehr.errors import Category, EhrError
from ehr.pki import certificate_thumbprint
from ehr.settings import Settings
from ehr.store.clients import Client, ClientRegistry
from ehr.store.search import criteria_of
from ehr.store.service import Store
from ehr.tls import peer_certificate_pem
from smart_auth.client_assertion import (
    ASSERTION_TYPE,
    ClientKeys,
    InvalidClientAssertion,
    JtiStore,
    JwksFetcher,
    verify_client_assertion,
)
from smart_auth.grants import AuthGrant, GrantStore
from smart_auth.roles import role_permissions
from smart_auth.scopes import Permissions
from smart_auth.throttle import SignInThrottle
from smart_auth.tokens import ACCESS_TOKEN_TYPE, AccessClaims, TokenKeys, new_token_id
from smart_auth.users import User, UserRegistry

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class OAuthError(Exception):
    """An RFC 6749 error answer: ``error`` code, a description without secrets, the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers={**NO_STORE, **self.headers})

    @property
    def category(self) -> Category:
        if self.status == 401:
            return Category.UNAUTHENTICATED
        return Category.FORBIDDEN if self.error in ("access_denied", "unauthorized_client") else Category.INVALID


@dataclass(slots=True)
class AuthServer:
    """Everything the endpoints need, built once per process."""

    settings: Settings
    audit: AuditLog
    clients: ClientRegistry
    users: UserRegistry
    grants: GrantStore
    keys: TokenKeys
    jti: JtiStore
    store: Store
    throttle: SignInThrottle
    fetcher: JwksFetcher = field(default_factory=JwksFetcher)

    @property
    def issuer(self) -> str:
        return self.settings.fhir_base

    def endpoint(self, name: str) -> str:
        return f"{self.settings.auth_base}/oauth/{name}"

    # -- client authentication ---------------------------------------------------------------

    async def authenticate_client(self, request: Request, form: Mapping[str, str]) -> Client:
        """The client making this request, by the one method it registered (RFC 6749 2.3, RFC 7523,
        RFC 8705); anything else is ``invalid_client``."""
        assertion_type = form.get("client_assertion_type")
        basic = _basic_credentials(request.headers.get("authorization"))
        thumbprint = thumbprint_of(request)
        if assertion_type is not None or "client_assertion" in form:
            if assertion_type != ASSERTION_TYPE:
                raise OAuthError("invalid_client", "unsupported client_assertion_type", 401)
            try:
                client_id = await verify_client_assertion(
                    form.get("client_assertion", ""), token_endpoint=self.endpoint("token"),
                    client_keys=self._client_keys, fetcher=self.fetcher, jti_store=self.jti, now=time.time(),
                )
            except InvalidClientAssertion as exc:
                raise OAuthError("invalid_client", f"client assertion refused: {exc}", 401) from None
            client = await self._enabled(client_id)
            method = "private_key_jwt"
        elif basic is not None:
            client = await self._enabled(basic[0])
            if not client.secret_matches(basic[1]):
                raise OAuthError("invalid_client", "client authentication failed", 401,
                                 {"WWW-Authenticate": 'Basic realm="token"'})
            method = "client_secret_basic"
        elif "client_secret" in form:
            client = await self._enabled(form.get("client_id", ""))
            if not client.secret_matches(form["client_secret"]):
                raise OAuthError("invalid_client", "client authentication failed", 401)
            method = "client_secret_post"
        else:
            client = await self._enabled(form.get("client_id", ""))
            method = "tls_client_auth" if client.auth_method == "tls_client_auth" else "none"
            if method == "tls_client_auth" and not (
                thumbprint and client.cert_thumbprint and hmac.compare_digest(thumbprint, client.cert_thumbprint)
            ):
                raise OAuthError("invalid_client", "the client's registered certificate was not presented", 401)
        if method != client.auth_method:
            raise OAuthError("invalid_client", f"this client authenticates with {client.auth_method}", 401)
        given = form.get("client_id")
        if given is not None and given != client.id:
            raise OAuthError("invalid_client", "client_id does not match the authenticated client", 401)
        return client

    async def _enabled(self, client_id: str) -> Client:
        client = await self.clients.by_id(client_id) if client_id else None
        if client is None or client.disabled:
            raise OAuthError("invalid_client", "unknown or disabled client", 401)
        return client

    async def _client_keys(self, client_id: str) -> ClientKeys | None:
        client = await self.clients.by_id(client_id)
        if client is None or client.disabled or client.auth_method != "private_key_jwt":
            return None
        return ClientKeys(client.jwks, client.jwks_uri)

    # -- tokens --------------------------------------------------------------------------------

    def access_token(self, grant: AuthGrant, client: Client, user: User | None, scopes: str) -> tuple[str, int]:
        """A signed access token for ``grant`` with ``scopes`` (no wider than the grant's)."""
        now = int(time.time())
        claims = AccessClaims(
            token_id=new_token_id(), grant_id=grant.id, client_id=client.id,
            subject=user.id if user else client.id, scope=scopes, expires=now + self.settings.access_token_seconds,
            patient=grant.patient, encounter=grant.encounter, fhir_user=user.fhir_user if user else None,
            role=user.role if user else None, cnf=grant.cnf,
        )
        token = self.keys.sign(claims.to_claims(self.issuer, self.issuer, now), typ=ACCESS_TOKEN_TYPE)
        return token, self.settings.access_token_seconds

    def id_token(self, client: Client, user: User, nonce: str | None) -> str:
        """OpenID Connect id_token (RS256) with the SMART ``fhirUser`` claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": user.id, "aud": client.id, "iat": now,
            "exp": now + self.settings.access_token_seconds, "name": user.display_name,
        }
        if user.fhir_user:
            claims["fhirUser"] = f"{self.issuer}/{user.fhir_user}"
        if nonce:
            claims["nonce"] = nonce
        return self.keys.sign(claims)

    # -- audit ---------------------------------------------------------------------------------

    async def record(
        self, request: Request, subtype: str, *, client: Client | None = None, user: User | None = None,
        error: OAuthError | None = None, detail: Mapping[str, str] | None = None, patient: str | None = None,
    ) -> None:
        """One AuditEvent for an authorization decision, durable before the answer."""
        what = Interaction(subtype, detail=dict(detail or {}), patient=patient)
        if error is not None:
            what.failed(error.category, f"{error.error}: {error.description}")
        await self.audit.record(actor_context(request, client, user), what)


def actor_context(request: Request, client: Client | None, user: User | None) -> AccessContext:
    """Who is acting in an authorization request: the user (through the app), or the app itself."""
    ctx = anonymous_context(peer_address(request))
    ctx = replace(ctx, cert_thumbprint=thumbprint_of(request))
    if user is not None:
        ctx = replace(ctx, actor=user.id, actor_display=user.display_name, role=role_permissions(user.role))
        if client is not None:
            ctx = replace(ctx, app=client.id, app_display=client.name)
    elif client is not None:
        ctx = replace(ctx, actor=client.id, actor_display=client.name)
    return ctx


def peer_address(request: Request) -> str | None:
    return f"{request.client.host}:{request.client.port}" if request.client else None


def thumbprint_of(request: Request) -> str | None:
    pem = peer_certificate_pem(request.scope)
    return certificate_thumbprint(pem) if pem else None


def pkce_matches(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 S256: a 43-128 character verifier whose S256 transform is the challenge."""
    if verifier is None or not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS:
        return False
    return hmac.compare_digest(create_s256_code_challenge(verifier), challenge)


def granted_scopes(requested: str, client: Client, user: User | None, base: str) -> Permissions:
    """What may be granted of ``requested``: within the client's registration; user/ grants only
    with a user; system/ grants only without one. A granular scope whose query the index cannot
    evaluate is ``invalid_scope`` here, rather than a grant that would allow nothing."""
    asked = Permissions.parse(requested).narrowed(client.permissions)
    keep = tuple(g for g in asked.grants if (g.context == "system") == (user is None))
    for grant in keep:
        if grant.query is not None:
            try:
                criteria_of(grant.resource_type, grant.query, base, "a granular scope")
            except EhrError as exc:
                raise OAuthError("invalid_scope", f"{grant.scope()}: {exc.message}") from None
    return Permissions(keep, asked.other_scopes)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """client_id and secret of an HTTP Basic header, form-url-decoded as RFC 6749 2.3.1 says."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
