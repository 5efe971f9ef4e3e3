"""Registered system clients, identified by their certificate's RFC 8705 thumbprint (x5t#S256).

Not ePHI; administrative data the edge consults to build an AccessContext.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.db.engine import reader, write_connection
from ehr.db.schema import client
from ehr.errors import Category, EhrError
from ehr.store.records import Row
from smart_auth.scopes import InvalidScope, Permissions


@dataclass(frozen=True, slots=True)
class Client:
    id: str
    name: str
    cert_thumbprint: str | None
    scopes: str
    disabled: bool
    permissions: Permissions


class ClientRegistry:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._reader = reader(engine)

    async def add(self, name: str, cert_thumbprint: str, scopes: str) -> Client:
        try:
            Permissions.parse(scopes)
        except InvalidScope as exc:
            raise EhrError(Category.INVALID, f"invalid scopes: {exc}") from None
        scopes = " ".join(scopes.split())
        record = Client(str(uuid.uuid4()), name, cert_thumbprint, scopes, False, Permissions.parse(scopes))
        conn = await write_connection(self._engine)
        try:
            async with conn.begin():
                await conn.execute(
                    insert(client).values(
                        id=record.id,
                        name=name,
                        cert_thumbprint=cert_thumbprint,
                        scopes=record.scopes,
                        created_us=time.time_ns() // 1000,
                        disabled=False,
                    )
                )
        except IntegrityError:
            raise EhrError(Category.CONFLICT, "a client with this certificate is already registered") from None
        finally:
            await conn.close()
        return record

    async def by_thumbprint(self, thumbprint: str) -> Client | None:
        async with self._reader.connect() as conn:
            row = (await conn.execute(select(client).where(client.c.cert_thumbprint == thumbprint))).mappings().first()
        return _client(row) if row else None

    async def list(self) -> list[Client]:
        async with self._reader.connect() as conn:
            rows = (await conn.execute(select(client).order_by(client.c.name))).mappings().all()
        return [_client(row) for row in rows]

    async def set_disabled(self, client_id: str, disabled: bool) -> None:
        conn = await write_connection(self._engine)
        try:
            async with conn.begin():
                result = await conn.execute(update(client).where(client.c.id == client_id).values(disabled=disabled))
                if result.rowcount == 0:
                    raise EhrError(Category.NOT_FOUND, "no such client")
        finally:
            await conn.close()


def _client(row: Row) -> Client:
    scopes = row["scopes"]
    disabled = bool(row["disabled"])
    return Client(row["id"], row["name"], row["cert_thumbprint"], scopes, disabled, Permissions.parse(scopes))
