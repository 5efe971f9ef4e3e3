"""Authentication, decided once per request, before any route: the verified client certificate
(from the ASGI TLS extension) names a registered client, whose scopes become the AccessContext.

Deny by default: every path under /fhir needs it except the public ones below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ehr.api import render
from ehr.audit.events import Interaction
from ehr.context import AccessContext, anonymous_context
from ehr.errors import Category, EhrError
from ehr.pki import certificate_thumbprint
from ehr.store.clients import Client, ClientRegistry
from ehr.tls import peer_certificate_pem

PUBLIC_PATHS = frozenset({"/fhir/metadata"})


@lru_cache(maxsize=4096)
def _thumbprint(pem: str) -> str:
    return certificate_thumbprint(pem)


class ClientCache:
    """Registered clients by thumbprint, cached for ``ttl`` seconds (0: ask the database every time)."""

    def __init__(self, registry: ClientRegistry, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, Client | None]] = {}

    async def get(self, thumbprint: str) -> Client | None:
        now = self._clock()
        hit = self._entries.get(thumbprint)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        found = await self._registry.by_thumbprint(thumbprint)
        if self._ttl > 0:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[thumbprint] = (now, found)
        return found


class CertificateAuth:
    def __init__(self, app: ASGIApp, clients: Callable[[], ClientCache]) -> None:
        self._app = app
        self._clients = clients

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
        if pem is None:
            raise EhrError(Category.UNAUTHENTICATED, "a client certificate is required")
        thumbprint = scope["ehr.thumbprint"] = _thumbprint(pem)
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


def _peer(scope: Scope) -> str | None:
    client: Any = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None
