"""Authentication, decided once per request, before any route.

Two ways in, deny by default for every path under /fhir except the public ones:
- ``Authorization: Bearer`` with an access token this server issued (smart_auth): signature (RS256
  pinned), type, issuer, audience and expiry checked; a certificate-bound token (RFC 8705 ``cnf``)
  only over a connection presenting that certificate; its grant still active (not revoked, client
  and user enabled; cached for ``client_cache_seconds``).
- no Authorization header: the verified client certificate names a registered client, whose
  ``system/`` scopes apply (systems such as lab interfaces that hold a certificate, not a token).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any, Generic, TypeVar

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ehr.api import render
from ehr.audit.events import Interaction
from ehr.context import AccessContext, anonymous_context
from ehr.errors import Category, EhrError
from ehr.pki import certificate_thumbprint
from ehr.store.clients import Client
from ehr.tls import peer_certificate_pem
from smart_auth.grants import GrantStatus
from smart_auth.roles import role_permissions
from smart_auth.scopes import Permissions
from smart_auth.tokens import ACCESS_TOKEN_TYPE, AccessClaims, InvalidToken

PUBLIC_PATHS = frozenset({
    "/fhir/metadata", "/fhir/.well-known/smart-configuration", "/fhir/.well-known/openid-configuration",
})
V = TypeVar("V")
_BEARER_REFUSED = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@lru_cache(maxsize=4096)
def _thumbprint(pem: str) -> str:
    return certificate_thumbprint(pem)


class Cached(Generic[V]):
    """Answers by key, cached for ``ttl`` seconds (0: ask every time): how quickly a disabled client,
    a revocation or a disabled account takes effect across processes."""

    def __init__(self, load: Callable[[str], Awaitable[V]], ttl: float, clock: Callable[[], float] = time.monotonic):
        self._load = load
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}

    async def get(self, key: str) -> V:
        now = self._clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = await self._load(key)
        if self._ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[key] = (now, found)
        return found


ClientCache = Cached[Client | None]     # registered clients by certificate thumbprint
GrantCache = Cached[GrantStatus]        # grant status by grant id


class Authentication:
    def __init__(self, app: ASGIApp, clients: Callable[[], ClientCache], grants: Callable[[], GrantCache]) -> None:
        self._app = app
        self._clients = clients
        self._grants = grants

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or not scope["path"].startswith("/fhir"):
            await self._app(scope, receive, send)
            return
        try:
            scope["ehr.context"] = await self._context(scope)
        except EhrError as err:
            refusal = await self._refuse(scope, err)
            await refusal(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def _refuse(self, scope: Scope, err: EhrError) -> Response:
        """The refusal's AuditEvent (a failed authentication), durable before the answer."""
        who = replace(anonymous_context(_peer(scope)), cert_thumbprint=scope.get("ehr.thumbprint"))
        what = Interaction("authenticate")
        what.failed(err.category, err.message)
        try:
            await scope["ehr.services"].audit.record(who, what)
        except EhrError as unavailable:
            return render.error(unavailable)
        return render.error(err)

    async def _context(self, scope: Scope) -> AccessContext:
        pem = peer_certificate_pem(scope)
        thumbprint = scope["ehr.thumbprint"] = _thumbprint(pem) if pem else None
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            return await self._token_context(scope, authorization, thumbprint)
        if thumbprint is None:
            raise EhrError(Category.UNAUTHENTICATED, "an access token or a client certificate is required",
                           headers={"WWW-Authenticate": "Bearer"})
        client = await self._clients().get(thumbprint)
        if client is None:
            raise EhrError(Category.UNAUTHENTICATED, "this client certificate is not registered")
        if client.disabled:
            raise EhrError(Category.FORBIDDEN, "this client is disabled")
        return AccessContext(
            actor=client.id,
            actor_display=client.name,
            permissions=client.permissions,
            cert_thumbprint=thumbprint,
            address=_peer(scope),
        )

    async def _token_context(self, scope: Scope, authorization: str, thumbprint: str | None) -> AccessContext:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise EhrError(Category.UNAUTHENTICATED, "only Bearer access tokens are accepted", headers=_BEARER_REFUSED)
        services = scope["ehr.services"]
        try:
            claims = AccessClaims.of(services.token_keys.verify(
                token.strip(), typ=ACCESS_TOKEN_TYPE, issuer=services.base, audience=services.base, now=time.time()
            ))
        except InvalidToken as exc:
            raise EhrError(Category.UNAUTHENTICATED, f"access token refused: {exc}", headers=_BEARER_REFUSED) from None
        if claims.cnf is not None and not (thumbprint and hmac.compare_digest(claims.cnf, thumbprint)):
            raise EhrError(Category.UNAUTHENTICATED, "this access token is bound to a client certificate that was "
                           "not presented", headers=_BEARER_REFUSED)
        status = await self._grants().get(claims.grant_id)
        if not status.active:
            raise EhrError(Category.UNAUTHENTICATED, "access token revoked", headers=_BEARER_REFUSED)
        user = claims.role is not None
        return AccessContext(
            actor=claims.subject,
            actor_display=(status.user_name or claims.subject) if user else status.client_name,
            permissions=_permissions(claims.scope),
            cert_thumbprint=thumbprint,
            patient=claims.patient,
            role=_role(claims.role) if claims.role is not None else None,
            app=claims.client_id if user else None,
            app_display=status.client_name if user else None,
            address=_peer(scope),
        )


# Tokens repeat the same few scope strings and roles: parse each once (the results are immutable).
_permissions = lru_cache(maxsize=4096)(Permissions.parse)
_role = lru_cache(maxsize=64)(role_permissions)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _peer(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None
