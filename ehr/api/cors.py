"""CORS for browser apps (checklist b8): discovery documents, the JWKS and /metadata are open to any
origin; the token endpoint and the FHIR API answer only the origins of registered redirect URIs.
Preflight requests are answered here, before authentication (they carry no credentials)."""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ehr.api.services import Services

OPEN_PATHS = frozenset({
    "/fhir/metadata", "/fhir/.well-known/smart-configuration", "/fhir/.well-known/openid-configuration",
    "/oauth/jwks", "/oauth/smart-style.json",
})
_ALLOW_HEADERS = (
    "authorization, content-type, accept, prefer, if-match, if-none-match, if-none-exist, if-modified-since"
)
_EXPOSE_HEADERS = "location, etag, last-modified, content-location"
_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD"


class Cors:
    def __init__(self, app: ASGIApp, services: Callable[[], Services], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        self._services = services
        self._ttl = ttl
        self._clock = clock
        self._origins: tuple[float, frozenset[str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self._app(scope, receive, send)
            return
        allowed = await self._allowed(scope["path"], origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            preflight = Response(status_code=204 if allowed else 403, headers=self._headers(allowed, origin, True))
            await preflight(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                for name, value in self._headers(allowed, origin, False).items():
                    response_headers[name] = value
            await send(message)

        await self._app(scope, receive, with_cors)

    async def _allowed(self, path: str, origin: str) -> str | None:
        """The Access-Control-Allow-Origin value for this path and origin, or None."""
        if path in OPEN_PATHS:
            return "*"
        if path.startswith("/fhir") or path in ("/oauth/token", "/oauth/revoke", "/oauth/introspect"):
            return origin if origin in await self._registered() else None
        return None

    async def _registered(self) -> frozenset[str]:
        now = self._clock()
        if self._origins is not None and now - self._origins[0] < self._ttl:
            return self._origins[1]
        clients = await self._services().clients.list()
        origins = frozenset(o for c in clients if not c.disabled for o in c.origins())
        self._origins = (now, origins)
        return origins

    @staticmethod
    def _headers(allowed: str | None, origin: str, preflight: bool) -> dict[str, str]:
        if allowed is None:
            return {"Vary": "Origin"}
        headers = {"Access-Control-Allow-Origin": allowed, "Vary": "Origin"}
        if preflight:
            headers |= {"Access-Control-Allow-Methods": _METHODS, "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                        "Access-Control-Max-Age": "600"}
        else:
            headers["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS
        return headers
