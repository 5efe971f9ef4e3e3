"""The ASGI application: FastAPI routes behind certificate authentication, errors as OperationOutcomes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from ehr.api import render
from ehr.api.auth import CertificateAuth, ClientCache
from ehr.api.routes import router
from ehr.api.services import Services
from ehr.errors import Category, EhrError
from ehr.settings import Settings

log = logging.getLogger("ehr.api")

_HTTP_CATEGORIES = {
    404: Category.NOT_FOUND,
    405: Category.NOT_SUPPORTED,
    406: Category.NOT_ACCEPTABLE,
    413: Category.TOO_LARGE,
    415: Category.UNSUPPORTED_MEDIA,
}


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The app; with ``services`` given (tests), no lifespan is needed to use it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            yield
            return
        opened = await Services.open(settings)
        _install(app, opened)
        try:
            yield
        finally:
            await opened.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.include_router(router)
    app.add_exception_handler(EhrError, _on_ehr_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _on_http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(CertificateAuth, clients=lambda: app.state.client_cache)
    if services is not None:
        _install(app, services)
    return app


def _install(app: FastAPI, services: Services) -> None:
    app.state.services = services
    app.state.client_cache = ClientCache(services.clients, services.settings.client_cache_seconds)


def app_from_environment() -> FastAPI:
    """uvicorn factory for worker processes: settings come from the EHR_* environment."""
    return create_app(Settings())


async def _on_ehr_error(_request: Request, err: EhrError) -> Response:
    return render.error(err)


async def _on_http_error(_request: Request, exc: HTTPException) -> Response:
    category = _HTTP_CATEGORIES.get(exc.status_code, Category.INVALID)
    headers = dict(exc.headers or {})
    return render.error(EhrError(category, str(exc.detail), headers=headers))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # Type only: an exception message may quote resource content.
    log.error("unexpected %s handling request %s", type(exc).__name__, request.scope.get("ehr.request_id"))
    return render.error(EhrError(Category.INTERNAL, "internal error"))
