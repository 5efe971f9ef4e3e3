"""The authorization server's HTTP face: discovery, JWKS, token, introspection, revocation, and the
sign-in pages (smart_auth/authorize.py). Served beside the FHIR API on the same TLS port."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from smart_auth import authorize, discovery, launcher, token_endpoint
from smart_auth.server import AuthServer

_log = logging.getLogger(__name__)
Handler = Callable[[Request, AuthServer], Awaitable[Response]]
_JSON = {"Cache-Control": "public, max-age=300"}


async def _smart(_request: Request, server: AuthServer) -> Response:
    return JSONResponse(discovery.smart_configuration(server), headers=_JSON)


async def _openid(_request: Request, server: AuthServer) -> Response:
    return JSONResponse(discovery.openid_configuration(server), headers=_JSON)


async def _jwks(_request: Request, server: AuthServer) -> Response:
    return JSONResponse(server.keys.jwks(), headers=_JSON)


async def _style(_request: Request, _server: AuthServer) -> Response:
    return JSONResponse(discovery.STYLE, headers=_JSON)


ROUTES: dict[str, tuple[frozenset[str], Handler]] = {
    "/fhir/.well-known/smart-configuration": (frozenset({"GET"}), _smart),
    "/fhir/.well-known/openid-configuration": (frozenset({"GET"}), _openid),
    "/oauth/jwks": (frozenset({"GET"}), _jwks),
    "/oauth/smart-style.json": (frozenset({"GET"}), _style),
    "/oauth/token": (frozenset({"POST"}), token_endpoint.token),
    "/oauth/introspect": (frozenset({"POST"}), token_endpoint.introspect),
    "/oauth/revoke": (frozenset({"POST"}), token_endpoint.revoke),
    "/oauth/authorize": (frozenset({"GET", "POST"}), authorize.authorize),
    "/oauth/launcher": (frozenset({"GET", "POST"}), launcher.launcher),
    "/oauth/access": (frozenset({"GET", "POST"}), launcher.access),
    "/oauth/logout": (frozenset({"GET", "POST"}), launcher.logout),
}
# Public documents any web page may fetch (CORS-01); the rest allow registered origins only.
PUBLIC = frozenset({
    "/fhir/.well-known/smart-configuration", "/fhir/.well-known/openid-configuration", "/oauth/jwks",
    "/oauth/smart-style.json",
})


def handles(path: str) -> bool:
    return path in ROUTES or path.startswith("/oauth/")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI app for the paths :func:`handles`; the services are in ``scope["ehr.services"]``."""
    request = Request(scope, receive)
    found = ROUTES.get(scope["path"])
    if found is None:
        response: Response = JSONResponse({"error": "not_found"}, status_code=404)
    elif request.method not in found[0] and not (request.method == "HEAD" and "GET" in found[0]):
        response = JSONResponse({"error": "method_not_allowed"}, status_code=405,
                                headers={"Allow": ", ".join(sorted(found[0]))})
    else:
        server: AuthServer = scope["ehr.services"].auth
        try:
            response = await found[1](request, server)
        except Exception as exc:  # noqa: BLE001 - never a trace to the client
            _log.error("authorization endpoint failed: %s", type(exc).__name__, exc_info=False)
            response = JSONResponse({"error": "server_error"}, status_code=500, headers={"Cache-Control": "no-store"})
    await response(scope, receive, send)
