"""Deny by default: may this context perform this interaction on this type? Pure; no IO."""

from __future__ import annotations

from ehr.context import AccessContext
from ehr.errors import Category, EhrError
from smart_auth.scopes import Letter


def require(ctx: AccessContext, resource_type: str, letter: Letter) -> None:
    if not ctx.permissions.allows(resource_type, letter):
        raise EhrError(Category.FORBIDDEN, f"the granted scopes do not allow '{letter}' on {resource_type}")


def readable_types(ctx: AccessContext) -> frozenset[str] | None:
    """Types whose history this context may list (None: all types)."""
    read = ctx.permissions.types_allowed("r")
    search = ctx.permissions.types_allowed("s")
    if read is None:
        return search
    if search is None:
        return read
    return read & search
