"""Shared fixtures: both database engines, fixed keys, a fixed clock, a dev PKI, and an in-process
client that presents a real client certificate through the ASGI TLS extension.

PostgreSQL: the suite creates its own database on EHR_TEST_POSTGRES_URL's server (default
127.0.0.1:5432, user postgres) and a schema per test. With CI=true an unreachable server fails the
run; elsewhere the PostgreSQL cases skip with a loud message.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ehr.api.app import create_app
from ehr.api.services import Services
from ehr.audit.log import AuditLog
from ehr.context import operator_context
from ehr.crypto.keys import MemoryKeyStore
from ehr.db.database import Database, open_database
from ehr.db.engine import ddl_engine, ensure_schema
from ehr.pki import DevPki, certificate_thumbprint, ensure_dev_pki
from ehr.settings import Settings
from ehr.store.service import Store

ADMIN_URL = os.environ.get("EHR_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
ENGINES = ["sqlite", "postgresql"]
BASE = "https://ehr.test/fhir"


class FixedClock:
    """Starts at 2026-01-01T00:00:00Z and moves 1 ms per reading."""

    def __init__(self, start_us: int = 1_767_225_600_000_000) -> None:
        self.now = start_us

    def now_us(self) -> int:
        self.now += 1000
        return self.now


def _admin(url: str, statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    name = f"ehr_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(ADMIN_URL, f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {ADMIN_URL} is unreachable in CI: {type(exc).__name__}: {exc}")
        with warnings.catch_warnings():  # filterwarnings=error would turn the notice into an error
            warnings.simplefilter("always")
            warnings.warn(f"PostgreSQL unreachable ({type(exc).__name__}): PostgreSQL tests SKIPPED", stacklevel=1)
        pytest.skip("PostgreSQL is unreachable")
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    _admin(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=ENGINES)
def engine_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if engine_kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'ehr.sqlite3'}"
    base: str = request.getfixturevalue("postgres_url")
    return base


@pytest.fixture
async def schema(engine_kind: str, database_url: str) -> AsyncIterator[dict[str, Any]]:
    """An empty schema on the engine under test (a PostgreSQL schema of its own per test); yields
    the connect arguments that select it."""
    if engine_kind == "sqlite":
        await ensure_schema(database_url)
        yield {}
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{name}"'))
    connect_args = {"server_settings": {"search_path": name}}
    await ensure_schema(database_url, connect_args)
    yield connect_args
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def db(database_url: str, schema: dict[str, Any]) -> AsyncIterator[Database]:
    """The store's database on the engine under test."""
    search_path = schema.get("server_settings", {}).get("search_path")
    database = open_database(database_url, pool_size=5, search_path=search_path)
    yield database
    await database.close()


@pytest.fixture
async def engine(database_url: str, schema: dict[str, Any]) -> AsyncIterator[AsyncEngine]:
    """A SQLAlchemy engine on the same schema, for tests that go around the store (tampering)."""
    eng = ddl_engine(database_url, schema)
    yield eng
    await eng.dispose()


@pytest.fixture
def keys() -> MemoryKeyStore:
    return MemoryKeyStore(seed=b"ehr-tests")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return ensure_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", base_url=BASE, client_cache_seconds=0)


@pytest.fixture
def services(settings: Settings, db: Database, keys: MemoryKeyStore, clock: FixedClock) -> Services:
    return Services.build(settings, db, keys, clock)


@pytest.fixture
def audit(services: Services) -> AuditLog:
    return services.audit


@pytest.fixture
def store(services: Services) -> Store:
    return services.store


class PresentCertificate:
    """ASGI wrapper standing in for the TLS server: puts a client certificate into the TLS extension."""

    def __init__(self, app: Any, pem: str | None) -> None:
        self.app = app
        self.pem = pem

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            chain = [self.pem] if self.pem else []
            tls = {"server_cert": None, "client_cert_chain": chain, "client_cert_name": None,
                   "client_cert_error": None, "tls_version": 0x0304, "cipher_suite": None}
            scope = {**scope, "extensions": {**scope.get("extensions", {}), "tls": tls}}
        await self.app(scope, receive, send)


async def make_client(services: Services, pem: str | None) -> httpx.AsyncClient:
    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=PresentCertificate(app, pem))
    return httpx.AsyncClient(transport=transport, base_url=BASE + "/")


async def register(services: Services, pem: str, scopes: str, name: str = "test-client") -> str:
    added = await services.clients.add(operator_context(), name, certificate_thumbprint(pem), scopes)
    return added.id


@pytest.fixture
async def fhir(services: Services, pki: DevPki) -> AsyncIterator[httpx.AsyncClient]:
    """A client registered with system/*.cruds, presenting the dev client certificate."""
    pem = pki.client_cert.read_text()
    await register(services, pem, "system/*.cruds")
    async with await make_client(services, pem) as client:
        yield client
