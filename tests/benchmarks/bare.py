"""The bare baseline: the least a server can do to store and return a Patient over the same stack.

A raw ASGI callable (no framework) served exactly like the real server: uvicorn through
``ehr.tls.EhrServerConfig`` (same certificates, TLS policy and protocol class), uvloop, one process.
``POST /fhir/Patient`` gives the resource an id, inserts (id, JSON) and answers 201 with it;
``GET /fhir/Patient/{id}`` selects and returns it; ``GET /fhir/Patient?family=x`` (or ``identifier=``)
answers a searchset Bundle from a JSON lookup in a table of its own (bare_search.py). No validation,
crypto, versioning, audit or authorization: the gap to ``ehr serve`` is what those safeguards cost.

PostgreSQL through an asyncpg pool; SQLite through aiosqlite with the real server's durability
settings (WAL, ``synchronous=FULL``). Run as ``python -m tests.benchmarks.bare --help``.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

import aiosqlite
import asyncpg  # type: ignore[import-untyped]
import uvicorn

from ehr.tls import EhrServerConfig
from tests.benchmarks.bare_search import PARAMS, PatientSearch, PostgresSearch, SqliteSearch, searchset

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

PATIENTS = "/fhir/Patient"
POOL_SIZE = 20  # the real server's default db_pool_size
_CREATE_TABLE = "CREATE TABLE IF NOT EXISTS bare_patient (id {id_type} PRIMARY KEY, body TEXT NOT NULL)"
_INSERT = "INSERT INTO bare_patient (id, body) VALUES ({0}, {1})"
_SELECT = "SELECT body FROM bare_patient WHERE id = {0}"


class Patients(Protocol):
    @property
    def search(self) -> PatientSearch: ...

    async def insert(self, patient_id: str, body: str) -> None: ...

    async def select(self, patient_id: str) -> str | None: ...

    async def close(self) -> None: ...


class PostgresPatients:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.search = PostgresSearch(pool)

    @classmethod
    async def open(cls, dsn: str) -> PostgresPatients:
        pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        await pool.execute(_CREATE_TABLE.format(id_type="uuid"))
        await PostgresSearch.create_schema(pool)
        return cls(pool)

    async def insert(self, patient_id: str, body: str) -> None:
        await self._pool.execute(_INSERT.format("$1", "$2"), patient_id, body)

    async def select(self, patient_id: str) -> str | None:
        body: str | None = await self._pool.fetchval(_SELECT.format("$1"), patient_id)
        return body

    async def close(self) -> None:
        await self._pool.close()


class SqlitePatients:
    """One connection in autocommit mode: every INSERT is its own durable transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.search = SqliteSearch(db)

    @classmethod
    async def open(cls, path: Path) -> SqlitePatients:
        db = await aiosqlite.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000"):
            await db.execute(f"PRAGMA {pragma}")
        await db.execute(_CREATE_TABLE.format(id_type="TEXT"))
        await SqliteSearch.create_schema(db)
        return cls(db)

    async def insert(self, patient_id: str, body: str) -> None:
        await self._db.execute(_INSERT.format("?", "?"), (patient_id, body))

    async def select(self, patient_id: str) -> str | None:
        async with self._db.execute(_SELECT.format("?"), (patient_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else str(row[0])

    async def close(self) -> None:
        await self._db.close()


async def open_patients(database_url: str) -> Patients:
    """The store for an ``EHR_DATABASE_URL``-style URL (``postgresql+asyncpg://``, ``sqlite+aiosqlite:///``)."""
    scheme, _, rest = database_url.partition("://")
    if scheme.startswith("postgresql"):
        return await PostgresPatients.open(f"postgresql://{rest}")
    if scheme.startswith("sqlite"):
        return await SqlitePatients.open(Path(rest.removeprefix("/")))
    raise ValueError(f"unsupported database URL scheme: {scheme}")


class BareApp:
    """The ASGI app: three routes, everything else 404."""

    def __init__(self, patients: Patients) -> None:
        self._patients = patients

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path == PATIENTS:
            await self._create(receive, send)
        elif method == "GET" and path.startswith(PATIENTS + "/"):
            await self._read(path.removeprefix(PATIENTS + "/"), send)
        elif method == "GET" and path == PATIENTS:
            await self._search(scope["query_string"].decode("latin-1"), send)
        else:
            await _respond(send, 404, b"")

    async def _create(self, receive: Receive, send: Send) -> None:
        resource = json.loads(await _read_body(receive))
        resource["id"] = patient_id = str(uuid.uuid4())
        body = json.dumps(resource, separators=(",", ":"))
        await self._patients.insert(patient_id, body)
        await _respond(send, 201, body.encode(), [(b"location", f"{PATIENTS}/{patient_id}".encode())])

    async def _read(self, patient_id: str, send: Send) -> None:
        body = await self._patients.select(patient_id) if _is_uuid(patient_id) else None
        if body is None:
            await _respond(send, 404, b"")
        else:
            await _respond(send, 200, body.encode())

    async def _search(self, query: str, send: Send) -> None:
        """One of the search parameters, once; anything else is a 400."""
        pairs = parse_qsl(query)
        if len(pairs) != 1 or pairs[0][0] not in PARAMS:
            await _respond(send, 400, b"")
            return
        found = await self._patients.search.find(*pairs[0])
        await _respond(send, 200, searchset(query, found))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/fhir+json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


class ServedBareApp:
    """:class:`BareApp` with an ASGI lifespan that opens the store at startup and closes it at shutdown."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._app: BareApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self._app is not None:
            await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup; if opening fails, uvicorn logs it and exits
        patients = await open_patients(self._database_url)
        self._app = BareApp(patients)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await patients.close()
        await send({"type": "lifespan.shutdown.complete"})


def server_config(database_url: str, pki: Path, port: int) -> EhrServerConfig:
    """The same settings as ``ehr.api.serve.server_config`` for one process."""
    return EhrServerConfig(
        ServedBareApp(database_url),
        host="127.0.0.1",
        port=port,
        certfile=pki / "server.pem",
        keyfile=pki / "server-key.pem",
        client_ca=pki / "ca.pem",
        log_level="warning",
        access_log=False,
        server_header=False,
        loop="uvloop",
        lifespan="on",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.bare", description=__doc__)
    parser.add_argument("--database", required=True, help="postgresql+asyncpg://... or sqlite+aiosqlite:///...")
    parser.add_argument("--pki", required=True, type=Path, help="directory of an `ehr init` dev PKI")
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    uvicorn.Server(server_config(args.database, args.pki, args.port)).run()


if __name__ == "__main__":
    main()
