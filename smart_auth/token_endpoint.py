"""The token endpoint (authorization_code with PKCE, refresh_token, client_credentials), token
introspection (RFC 7662) and revocation (RFC 7009). Every issue and every refusal is audited."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ehr.store.clients import Client
from smart_auth.grants import AuthGrant
from smart_auth.scopes import InvalidScope, Permissions
from smart_auth.server import NO_STORE, AuthServer, OAuthError, granted_scopes, pkce_matches, thumbprint_of
from smart_auth.tokens import ACCESS_TOKEN_TYPE, AccessClaims, InvalidToken
from smart_auth.users import User

_MAX_FORM_FIELD = 16384


async def token(request: Request, server: AuthServer) -> Response:
    client: Client | None = None
    form: dict[str, str] = {}
    grant_type = ""
    try:
        form = await _form(request)
        grant_type = form.get("grant_type", "")
        client = await server.authenticate_client(request, form)
        if grant_type not in client.grant_types:
            raise OAuthError("unauthorized_client", f"this client may not use the {grant_type or 'missing'} grant")
        if grant_type == "authorization_code":
            body, user, grant = await _authorization_code(request, server, client, form)
        elif grant_type == "refresh_token":
            body, user, grant = await _refresh(request, server, client, form)
        elif grant_type == "client_credentials":
            body, user, grant = await _client_credentials(request, server, client, form)
        else:
            raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code, refresh_token or "
                             "client_credentials")
    except OAuthError as refused:
        await server.record(request, "token", client=client, error=refused, detail={"grant_type": grant_type[:40]})
        return refused.response()
    await server.record(
        request, "token", client=client, user=user, patient=grant.patient,
        detail={"grant_type": grant_type, "grant": grant.id, "scope": body["scope"]},
    )
    return JSONResponse(body, headers=NO_STORE)


async def _authorization_code(
    request: Request, server: AuthServer, client: Client, form: Mapping[str, str]
) -> tuple[dict[str, Any], User | None, AuthGrant]:
    code = await server.grants.redeem_code(form.get("code", "")) if form.get("code") else None
    if code is None or code.grant.client_id != client.id:
        raise OAuthError("invalid_grant", "the code is unknown, used, expired or for another client")
    if form.get("redirect_uri") != code.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request's")
    if not pkce_matches(form.get("code_verifier"), code.challenge):
        await server.grants.revoke(code.grant.id)
        raise OAuthError("invalid_grant", "code_verifier missing or wrong (PKCE S256)")
    user = await _user(server, code.grant)
    grant = code.grant
    permissions = Permissions.parse(grant.scopes)
    grant, refresh = await server.grants.complete(
        grant, cnf=thumbprint_of(request), refresh_seconds=_refresh_seconds(server, permissions)
    )
    body = _token_body(server, grant, client, user, grant.scopes)
    if refresh:
        body["refresh_token"] = refresh
    if user is not None and permissions.has("openid") and (permissions.has("fhirUser") or permissions.has("profile")):
        body["id_token"] = server.id_token(client, user, code.nonce)
    return body, user, grant


async def _refresh(
    request: Request, server: AuthServer, client: Client, form: Mapping[str, str]
) -> tuple[dict[str, Any], User | None, AuthGrant]:
    presented = form.get("refresh_token", "")
    grant = await server.grants.by_refresh_token(presented) if presented else None
    if grant is None and presented and await server.grants.revoke_if_replaced(presented):
        raise OAuthError("invalid_grant", "this refresh token was already used: its grant is revoked")
    if grant is None or grant.client_id != client.id:
        raise OAuthError("invalid_grant", "the refresh token is unknown, expired, revoked or for another client")
    if grant.cnf is not None and thumbprint_of(request) != grant.cnf:   # RFC 8705 section 4 (MTLS-06)
        raise OAuthError("invalid_grant", "this refresh token is bound to a client certificate not presented")
    settings = server.settings
    if grant.session_hash is not None and not await server.grants.session_live(
        grant.session_hash, idle_seconds=settings.session_idle_minutes * 60,
        max_seconds=settings.session_max_hours * 3600,
    ):
        raise OAuthError("invalid_grant", "online_access ended with the user's sign-in session")
    user = await _user(server, grant)
    scopes = grant.scopes
    if form.get("scope"):
        scopes = _subset(form["scope"], grant.scopes)
    new = await server.grants.rotate_refresh_token(grant, presented)
    if new is None:
        raise OAuthError("invalid_grant", "the refresh token was already used")
    body = _token_body(server, grant, client, user, scopes)
    body["refresh_token"] = new
    return body, user, grant


async def _client_credentials(
    request: Request, server: AuthServer, client: Client, form: Mapping[str, str]
) -> tuple[dict[str, Any], User | None, AuthGrant]:
    if client.public:
        raise OAuthError("unauthorized_client", "client_credentials needs an authenticated client")
    try:
        granted = granted_scopes(form.get("scope", ""), client, None, server.issuer)
    except InvalidScope as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    if not granted.grants:
        raise OAuthError("invalid_scope", "none of the requested system/ scopes is registered for this client")
    cnf = thumbprint_of(request)
    if server.settings.require_bound_system_tokens and cnf is None:
        raise OAuthError("invalid_client", "system/ tokens must be bound to a client certificate (mutual TLS)", 401)
    scopes = Permissions(granted.grants).scope_string()
    grant, _ = await server.grants.create(client_id=client.id, user_id=None, scopes=scopes, cnf=cnf)
    return _token_body(server, grant, client, None, scopes), None, grant


def _token_body(server: AuthServer, grant: AuthGrant, client: Client, user: User | None, scopes: str) -> dict[str, Any]:
    access, expires_in = server.access_token(grant, client, user, scopes)
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": expires_in, "scope": scopes}
    if grant.patient:
        body["patient"] = grant.patient
        body["need_patient_banner"] = True
        body["smart_style_url"] = server.endpoint("smart-style.json")
    if grant.encounter:
        body["encounter"] = grant.encounter
    return body


def _refresh_seconds(server: AuthServer, permissions: Permissions) -> int | None:
    if permissions.has("offline_access"):
        return int(server.settings.refresh_token_days * 86400)
    if permissions.has("online_access"):
        return int(server.settings.online_refresh_hours * 3600)
    return None


def _subset(requested: str, granted: str) -> str:
    """A refresh may ask for fewer scopes than the grant, never more."""
    try:
        asked = Permissions.parse(requested)
    except InvalidScope as exc:
        raise OAuthError("invalid_scope", str(exc)) from None
    allowed = Permissions.parse(granted)
    narrowed = asked.narrowed(allowed)
    if narrowed != asked:
        raise OAuthError("invalid_scope", "a refresh cannot widen the grant")
    return narrowed.scope_string()


async def _user(server: AuthServer, grant: AuthGrant) -> User | None:
    if grant.user_id is None:
        return None
    user = await server.users.by_id(grant.user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "the user of this grant is disabled")
    return user


# -- introspection and revocation ---------------------------------------------------------------


async def introspect(request: Request, server: AuthServer) -> Response:
    """RFC 7662 for any authenticated client: ``active`` and, when active, what the token carries."""
    authenticated = await _client_request(request, server, "introspect")
    if isinstance(authenticated, Response):
        return authenticated
    client, form = authenticated
    answer = await _describe(server, form.get("token", ""))
    await server.record(request, "introspect", client=client, detail={"active": str(answer["active"]).lower()})
    return JSONResponse(answer, headers=NO_STORE)


async def _describe(server: AuthServer, presented: str) -> dict[str, Any]:
    try:
        claims = server.keys.verify(presented, typ=ACCESS_TOKEN_TYPE, issuer=server.issuer, audience=server.issuer,
                                    now=time.time())
        access = AccessClaims.of(claims)
    except InvalidToken:
        grant = await server.grants.by_refresh_token(presented) if presented else None
        if grant is None or not await server.grants.active(grant.id):
            return {"active": False}
        return {"active": True, "token_type": "refresh_token", "client_id": grant.client_id, "scope": grant.scopes,
                "exp": (grant.refresh_expires_us or 0) // 1_000_000, **_context(grant.patient, grant.encounter)}
    if not await server.grants.active(access.grant_id):
        return {"active": False}
    answer: dict[str, Any] = {
        "active": True, "token_type": "Bearer", "scope": access.scope, "client_id": access.client_id,
        "exp": access.expires, "iat": claims.get("iat"), "sub": access.subject, "iss": server.issuer,
        "aud": server.issuer, **_context(access.patient, access.encounter),
    }
    if access.fhir_user:
        answer["fhirUser"] = f"{server.issuer}/{access.fhir_user}"  # as the id_token says it
    if access.cnf:
        answer["cnf"] = {"x5t#S256": access.cnf}
    return answer


def _context(patient: str | None, encounter: str | None) -> dict[str, str]:
    return {k: v for k, v in (("patient", patient), ("encounter", encounter)) if v}


async def revoke(request: Request, server: AuthServer) -> Response:
    """RFC 7009: the client revokes one of its tokens; the whole grant ends. Always 200 for a token
    that is unknown or not this client's (no oracle)."""
    authenticated = await _client_request(request, server, "revoke")
    if isinstance(authenticated, Response):
        return authenticated
    client, form = authenticated
    grant_id = await _grant_of(server, form.get("token", ""))
    revoked = False
    if grant_id is not None:
        grant = await server.grants.by_id(grant_id)
        if grant is not None and grant.client_id == client.id:
            revoked = await server.grants.revoke(grant_id)
    await server.record(request, "revoke", client=client, detail={"revoked": str(revoked).lower()})
    return Response(status_code=200, headers=NO_STORE)


async def _grant_of(server: AuthServer, presented: str) -> str | None:
    if not presented:
        return None
    try:
        claims = server.keys.verify(presented, typ=ACCESS_TOKEN_TYPE, issuer=server.issuer, audience=server.issuer,
                                    now=time.time())
        return AccessClaims.of(claims).grant_id
    except InvalidToken:
        grant = await server.grants.by_refresh_token(presented)
        return grant.id if grant else None


async def _client_request(
    request: Request, server: AuthServer, subtype: str
) -> tuple[Client, dict[str, str]] | Response:
    """The form of a request an authenticated client makes, or the audited refusal to answer."""
    client: Client | None = None
    try:
        form = await _form(request)
        client = await server.authenticate_client(request, form)
    except OAuthError as refused:
        await server.record(request, subtype, client=client, error=refused)
        return refused.response()
    return client, form


async def _form(request: Request) -> dict[str, str]:
    """The form body (application/x-www-form-urlencoded only); a repeated field is an error."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    form = await request.form(max_files=0, max_fields=50)
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if not isinstance(value, str) or len(value) > _MAX_FORM_FIELD:
            raise OAuthError("invalid_request", f"field {name[:40]!r} is too long or not text")
        if name in fields:
            raise OAuthError("invalid_request", f"field {name[:40]!r} is repeated")
        fields[name] = value
    return fields
