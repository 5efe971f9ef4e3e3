"""What one server process holds: settings, engine, keys, the store and the client registry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.api.capability import capability_statement
from ehr.crypto.keys import FileKeyStore, KeyStore
from ehr.db.engine import create_engine, create_schema
from ehr.settings import Settings
from ehr.store.clients import ClientRegistry
from ehr.store.service import Clock, Store


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    keys: KeyStore
    store: Store
    clients: ClientRegistry
    capability_statement: bytes

    @property
    def base(self) -> str:
        return self.settings.fhir_base

    @classmethod
    def build(
        cls, settings: Settings, engine: AsyncEngine, keys: KeyStore, clock: Clock | None = None
    ) -> Services:
        published = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(
            settings=settings,
            engine=engine,
            keys=keys,
            store=Store(engine, keys, clock),
            clients=ClientRegistry(engine),
            capability_statement=capability_statement(settings.fhir_base, published),
        )

    @classmethod
    async def open(cls, settings: Settings) -> Services:
        engine = create_engine(settings.database, pool_size=settings.db_pool_size)
        await create_schema(engine)
        return cls.build(settings, engine, FileKeyStore(settings.keys_dir))

    async def close(self) -> None:
        await self.engine.dispose()
