"""Registered system clients, identified by their certificate's RFC 8705 thumbprint (x5t#S256).

Not ePHI; administrative data the edge consults to build an AccessContext.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.db.database import Conflict, Database, Row
from ehr.errors import Category, EhrError
from smart_auth.scopes import InvalidScope, Permissions

_INSERT = (
    "INSERT INTO client (id, name, cert_thumbprint, scopes, created_us, disabled) VALUES ($1, $2, $3, $4, $5, $6)"
)


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    cert_thumbprint: str | None
    scopes: str
    disabled: bool
    permissions: Permissions


class ClientRegistry:
    """Registration changes are administrative events: each leaves an AuditEvent naming who did it."""

    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def add(self, ctx: AccessContext, name: str, cert_thumbprint: str, scopes: str) -> Client:
        async with self._audit.audited(ctx, Interaction("client-add")) as event:
            try:
                permissions = Permissions.parse(scopes)
            except InvalidScope as exc:
                raise EhrError(Category.INVALID, f"invalid scopes: {exc}") from None
            scopes = " ".join(scopes.split())
            record = Client(str(uuid.uuid4()), name, cert_thumbprint, scopes, False, permissions)
            event.detail = {"client": record.id, "name": name, "x5t#S256": cert_thumbprint, "scopes": scopes}
            try:
                await self._db.execute(_INSERT, record.id, name, cert_thumbprint, scopes, time.time_ns() // 1000, False)
            except Conflict:
                raise EhrError(Category.CONFLICT, "a client with this certificate is already registered") from None
            return record

    async def by_thumbprint(self, thumbprint: str) -> Client | None:
        row = await self._db.fetch_one("SELECT * FROM client WHERE cert_thumbprint = $1", thumbprint)
        return _client(row) if row else None

    async def list(self) -> list[Client]:
        return [_client(row) for row in await self._db.fetch_all("SELECT * FROM client ORDER BY name")]

    async def set_disabled(self, ctx: AccessContext, client_id: str, disabled: bool) -> None:
        what = Interaction("client-disable" if disabled else "client-enable", detail={"client": client_id})
        async with self._audit.audited(ctx, what):
            if await self._db.execute("UPDATE client SET disabled = $1 WHERE id = $2", disabled, client_id) == 0:
                raise EhrError(Category.NOT_FOUND, "no such client")


def _client(row: Row) -> Client:
    scopes = row["scopes"]
    disabled = bool(row["disabled"])
    return Client(row["id"], row["name"], row["cert_thumbprint"], scopes, disabled, Permissions.parse(scopes))
