"""The FHIR RESTful router: a small ASGI app that matches `/fhir/...` paths to handlers, and maps
every error to an OperationOutcome in one place.

Why not FastAPI's router: profiling showed its layers (dependency resolution, exit stacks,
telemetry and body-limit middleware, exception wrappers) costing a large share of a read's CPU;
the FHIR URL grammar is small enough to match directly (docs/adr/0005-raw-driver-hot-path.md).
Every HTTP request comes here, so every one leaves an AuditEvent; FastAPI hosts the lifespan (and,
when they come, endpoints outside /fhir: route them here with their own audit).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ehr.api import render
from ehr.audit.events import Interaction
from ehr.context import anonymous_context
from ehr.errors import Category, EhrError

log = logging.getLogger("ehr.api")

Handler = Callable[[Request], Awaitable[Response]]
# (path pattern, method) -> (handler, interaction); a pattern is a tuple of literal segments and {names}
RouteTable = dict[tuple[tuple[str, ...], str], tuple[Handler, str]]


def route_table(routes: list[tuple[str, str, Handler, str]]) -> RouteTable:
    return {(tuple(path.strip("/").split("/")), method): (handler, code) for path, method, handler, code in routes}


class FhirRouter:
    def __init__(self, table: RouteTable, fallback: ASGIApp) -> None:
        self._fallback = fallback  # everything that is not HTTP (the lifespan)
        self._by_length: dict[int, list[tuple[tuple[str, ...], str, Handler, str]]] = {}
        for (pattern, method), (handler, code) in table.items():
            self._by_length.setdefault(len(pattern), []).append((pattern, method, handler, code))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._fallback(scope, receive, send)
            return
        path: str = scope["path"]  # any path: one outside the table is a 404, audited like the rest
        failure: EhrError | None = None
        try:
            response = await self._dispatch(scope, receive, path)
        except EhrError as err:
            failure, response = err, render.error(err)
        except Exception as exc:  # noqa: BLE001 - the last line: a 500 OperationOutcome, never a trace
            _log_unexpected(scope, exc)
            failure = EhrError(Category.INTERNAL, "internal error")
            response = render.error(failure)
        try:
            await _audit_edge(scope, failure)
        except Exception as exc:  # noqa: BLE001 - no answer goes out without its AuditEvent
            _log_unexpected(scope, exc)
            response = render.error(EhrError(Category.INTERNAL, "the audit log is unavailable"))
        await response(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, path: str) -> Response:
        segments = tuple(path.strip("/").split("/"))
        method = scope["method"]
        allowed = False
        for pattern, route_method, handler, code in self._by_length.get(len(segments), ()):
            params = _match(pattern, segments)
            if params is None:
                continue
            scope["path_params"] = params
            if route_method == method or (method == "HEAD" and route_method == "GET"):
                scope["ehr.interaction"] = code
                return await handler(Request(scope, receive))
            allowed = True
        if allowed:
            raise EhrError(Category.NOT_SUPPORTED, f"{method} is not supported here")
        raise EhrError(Category.NOT_FOUND, "no such FHIR endpoint")


async def _audit_edge(scope: Scope, failure: EhrError | None) -> None:
    """The AuditEvent of a request that ended before reaching the store (bad input, a refused
    format, an unknown endpoint, the public CapabilityStatement)."""
    ctx = scope.get("ehr.context") or anonymous_context(_peer(scope))
    if ctx.trail.recorded:
        return
    params = scope.get("path_params", {})
    what = Interaction(scope.get("ehr.interaction", "unknown"), params.get("res_type"), params.get("res_id"))
    if failure is not None:
        what.failed(failure.category, failure.message)
    ctx.trail.recorded = True
    await scope["ehr.services"].audit.record(ctx, what)


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _log_unexpected(scope: Scope, exc: BaseException) -> None:
    ctx = scope.get("ehr.context")
    log.error("unexpected %s handling request %s", type(exc).__name__, ctx.request_id if ctx else "-")


def _match(pattern: tuple[str, ...], segments: tuple[str, ...]) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for expected, actual in zip(pattern, segments, strict=True):
        if expected.startswith("{"):
            if not actual or actual.startswith("_"):
                return None  # "_history", "_search" ... are never types, ids or versions
            params[expected[1:-1]] = actual
        elif expected != actual:
            return None
    return params
