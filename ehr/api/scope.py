"""What the middleware put into a request's scope: the process's services and the caller's context."""

from __future__ import annotations

from starlette.requests import Request

from ehr.api.services import Services
from ehr.context import AccessContext
from ehr.errors import Category, EhrError


def services_of(request: Request) -> Services:
    services: Services = request.scope["ehr.services"]
    return services


def context_of(request: Request) -> AccessContext:
    ctx: AccessContext | None = request.scope.get("ehr.context")
    if ctx is None:  # the auth middleware guards every path but /metadata; this is a second lock
        raise EhrError(Category.UNAUTHENTICATED, "authentication required")
    return ctx
