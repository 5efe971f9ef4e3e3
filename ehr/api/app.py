"""The ASGI application: CORS, then the authorization server's paths (smart_auth/web.py) or
authentication (token or certificate) in front of the FHIR router, which audits every request;
FastAPI hosts the lifespan."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from ehr import __version__
from ehr.api.audit_routes import audit_routes
from ehr.api.auth import Authentication, ClientCache, GrantCache
from ehr.api.bundle_routes import bundle_routes
from ehr.api.cors import Cors
from ehr.api.router import FhirRouter, route_table
from ehr.api.routes import routes
from ehr.api.search_routes import search_routes
from ehr.api.services import Services
from ehr.audit.alert_store import AlertMonitor
from ehr.audit.events import Interaction
from ehr.context import server_context
from ehr.errors import Category, EhrError
from ehr.fhir.validator import validate
from ehr.settings import Settings
from ehr.store.service import SystemClock
from smart_auth import web


@dataclass(slots=True)
class _Running:
    """What the lifespan opened (or the caller gave), shared by every request of this process."""

    services: Services | None = None
    client_cache: ClientCache | None = None
    grant_cache: GrantCache | None = None

    def install(self, services: Services) -> None:
        self.services = services
        ttl = services.settings.client_cache_seconds
        self.client_cache = ClientCache(services.clients.by_thumbprint, ttl)
        self.grant_cache = GrantCache(services.auth.grants.status, ttl)

    def grants(self) -> GrantCache:
        if self.grant_cache is None:
            raise EhrError(Category.INTERNAL, "the server is not started")
        return self.grant_cache

    def running(self) -> Services:
        if self.services is None:
            raise EhrError(Category.INTERNAL, "the server is not started")
        return self.services

    def clients(self) -> ClientCache:
        if self.client_cache is None:
            raise EhrError(Category.INTERNAL, "the server is not started")
        return self.client_cache


class _WithServices:
    """Puts the process's services into each request's scope, and sends the authorization server's
    paths (smart_auth/web.py) to it, everything else to the authenticated FHIR API."""

    def __init__(self, app: ASGIApp, running: _Running) -> None:
        self._app = app
        self._running = running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["ehr.services"] = self._running.services
            if web.handles(scope["path"]):
                await web.app(scope, receive, send)
                return
        await self._app(scope, receive, send)


Listener = Callable[[Services], AbstractAsyncContextManager[object]]
"""Another way in served by the same process (the HL7 v2 listener): entered once the services are
open, left before they close."""


def create_app(settings: Settings, services: Services | None = None, listeners: Sequence[Listener] = ()) -> ASGIApp:
    """The app; with ``services`` given (tests), no lifespan is needed to use it."""
    running = _Running()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            yield
            return
        opened = await Services.open(settings)
        running.install(opened)
        monitor = AlertMonitor.from_settings(settings, opened.db, opened.keys, SystemClock())
        opened.audit.on_sealed = monitor.on_sealed
        monitor.start()
        me = server_context(opened.base)
        await opened.audit.record(me, Interaction("server-start", detail=_configuration(settings)))
        sealer = asyncio.get_running_loop().create_task(opened.audit.run_sealer(settings.audit_seal_seconds))
        forwarding = _start_forwarder(settings, opened)
        _settle()
        try:
            async with AsyncExitStack() as stack:
                for listener in listeners:
                    await stack.enter_async_context(listener(opened))
                yield
        finally:
            for task in (forwarding, sealer):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
            await opened.audit.record(me, Interaction("server-stop"))
            await opened.audit.seal()
            await monitor.stop()
            await opened.close()

    host = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    if services is not None:
        running.install(services)
    table = route_table(audit_routes + routes + search_routes + bundle_routes)  # specific before generic
    fhir = FhirRouter(table, fallback=host)
    api = _WithServices(Authentication(fhir, clients=running.clients, grants=running.grants), running)
    return Cors(api, running.running, ttl=settings.client_cache_seconds)


def _configuration(settings: Settings) -> dict[str, str]:
    """What the server started with, for its audit event: no secrets (the database URL may hold a
    password: only its engine is named)."""
    return {
        "version": __version__,
        "base_url": settings.fhir_base,
        "listen": f"{settings.host}:{settings.port}",
        "workers": str(settings.workers),
        "database": settings.database.split(":", 1)[0],
        "tls_cert": str(settings.server_cert),
        "client_ca": str(settings.ca_cert),
        "keys": str(settings.keys_dir),
    }


def _start_forwarder(settings: Settings, services: Services) -> asyncio.Task[None] | None:
    """The SIEM feed (ehr/audit/siem.py), when EHR_SYSLOG_URL is set; it never delays a request."""
    if not settings.syslog_url:
        return None
    from ehr.audit.pseudonym import load_pseudonyms
    from ehr.audit.siem import Forwarder, tls_sender
    from ehr.store.service import SystemClock

    sender = tls_sender(settings.syslog_url, settings.syslog_ca, settings.syslog_cert, settings.syslog_key)
    forwarder = Forwarder(services.db, services.keys, load_pseudonyms(settings.keys_dir), sender, SystemClock())
    return asyncio.get_running_loop().create_task(forwarder.run(settings.audit_seal_seconds))


def _settle() -> None:
    """Load the R4 tables now rather than on the first write, then move everything built at start-up
    out of the garbage collector's view: full collections over it caused tail-latency spikes."""
    validate({"resourceType": "Patient"})
    gc.collect()
    gc.freeze()


def app_from_environment() -> ASGIApp:
    """uvicorn factory for worker processes: settings come from the EHR_* environment."""
    return create_app(Settings())
