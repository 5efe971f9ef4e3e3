"""The bare baseline's search: ``GET /fhir/Patient?family=x`` or ``?identifier=x`` by one JSON lookup.

The same patients as the real server's, as plain JSON documents in a table of their own. PostgreSQL:
``jsonb``, a btree expression index on ``lower(name[0].family)`` (``COLLATE "C"``, so a starts-with
match is a range scan that prepared statements keep using) and a GIN index (``jsonb_path_ops``) on
``identifier`` for containment. SQLite: the JSON text with expression indexes on ``json_extract``
(``identifier[0].value``: one identifier a patient in the benchmark's data). One query per search
gives the first page in id order (the real server's default order) and the total, by
``count(*) OVER ()``; the searchset Bundle is put together from the stored text. No blind index,
decryption, authorization or audit: the gap to ``ehr serve`` is what those cost in a search.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import asyncpg  # type: ignore[import-untyped]

PARAMS = ("family", "identifier")
PAGE_SIZE = 50  # the real server's default page size
BASE = "https://127.0.0.1/fhir"
_PG_FAMILY = "(lower(body #>> '{name,0,family}') COLLATE \"C\")"
_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bare_search_patient (id uuid PRIMARY KEY, body jsonb NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS bare_search_family ON bare_search_patient ({_PG_FAMILY})",
    "CREATE INDEX IF NOT EXISTS bare_search_identifier ON bare_search_patient "
    "USING gin ((body -> 'identifier') jsonb_path_ops)",
)
_PG_FIND = {
    "family": f"WHERE {_PG_FAMILY} >= $1 AND {_PG_FAMILY} < $2",
    "identifier": "WHERE body -> 'identifier' @> $1::jsonb",
}
_SQLITE_FAMILY = "lower(json_extract(body, '$.name[0].family'))"
_SQLITE_IDENTIFIER = "json_extract(body, '$.identifier[0].value')"
_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bare_search_patient (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    f"CREATE INDEX IF NOT EXISTS bare_search_family ON bare_search_patient ({_SQLITE_FAMILY})",
    f"CREATE INDEX IF NOT EXISTS bare_search_identifier ON bare_search_patient ({_SQLITE_IDENTIFIER})",
)
_SQLITE_FIND = {
    "family": f"WHERE {_SQLITE_FAMILY} >= ? AND {_SQLITE_FAMILY} < ?",
    "identifier": f"WHERE {_SQLITE_IDENTIFIER} = ?",
}
_PAGE = f"FROM bare_search_patient {{}} ORDER BY id LIMIT {PAGE_SIZE}"
_PG_SELECT = "SELECT id::text, body::text, count(*) OVER () " + _PAGE
_SQLITE_SELECT = "SELECT id, body, count(*) OVER () " + _PAGE


@dataclass(frozen=True)
class Found:
    total: int
    page: list[tuple[str, str]]  # (id, JSON text) in id order


class PatientSearch(Protocol):
    async def find(self, param: str, value: str) -> Found: ...


def _starting_with(value: str) -> tuple[str, str]:
    """A case-insensitive starts-with match (search.html#string) as a range of lower-cased text."""
    prefix = value.lower()
    return prefix, prefix + "\U0010ffff"


class PostgresSearch:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @staticmethod
    async def create_schema(connection: asyncpg.Pool | asyncpg.Connection) -> None:
        for statement in _PG_SCHEMA:
            await connection.execute(statement)

    async def find(self, param: str, value: str) -> Found:
        arguments = (json.dumps([{"value": value}]),) if param == "identifier" else _starting_with(value)
        rows = await self._pool.fetch(_PG_SELECT.format(_PG_FIND[param]), *arguments)
        return Found(rows[0][2] if rows else 0, [(row[0], row[1]) for row in rows])


class SqliteSearch:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @staticmethod
    async def create_schema(db: aiosqlite.Connection) -> None:
        for statement in _SQLITE_SCHEMA:
            await db.execute(statement)

    async def find(self, param: str, value: str) -> Found:
        arguments = (value,) if param == "identifier" else _starting_with(value)
        async with self._db.execute(_SQLITE_SELECT.format(_SQLITE_FIND[param]), arguments) as cursor:
            rows = list(await cursor.fetchall())
        return Found(int(rows[0][2]) if rows else 0, [(str(row[0]), str(row[1])) for row in rows])


def searchset(query: str, found: Found) -> bytes:
    """A searchset Bundle (search.html#return): the total, a self link and the page's entries."""
    link = json.dumps(f"{BASE}/Patient?{query}")
    head = (f'{{"resourceType":"Bundle","type":"searchset","total":{found.total:d},'
            f'"link":[{{"relation":"self","url":{link}}}],"entry":[')
    entries = ",".join(f'{{"fullUrl":"{BASE}/Patient/{i}","search":{{"mode":"match"}},"resource":{body}}}'
                       for i, body in found.page)
    return (head + entries + "]}").encode()


async def add_patients(database_url: str, resources: Iterable[dict[str, Any]]) -> int:
    """Store the patients (each given an id) straight into the bare database; returns how many."""
    rows = []
    for resource in resources:
        patient_id = str(uuid.uuid4())
        rows.append((patient_id, json.dumps({**resource, "id": patient_id}, separators=(",", ":"))))
    scheme, _, rest = database_url.partition("://")
    if scheme.startswith("postgresql"):
        await _add_postgres(f"postgresql://{rest}", rows)
    else:
        await _add_sqlite(Path(rest.removeprefix("/")), rows)
    return len(rows)


async def _add_postgres(dsn: str, rows: list[tuple[str, str]]) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await PostgresSearch.create_schema(connection)
        await connection.executemany("INSERT INTO bare_search_patient (id, body) VALUES ($1, $2::jsonb)", rows)
    finally:
        await connection.close()


async def _add_sqlite(path: Path, rows: list[tuple[str, str]]) -> None:
    async with aiosqlite.connect(path) as db:
        await db.execute("PRAGMA busy_timeout=30000")
        await SqliteSearch.create_schema(db)
        await db.executemany("INSERT INTO bare_search_patient (id, body) VALUES (?, ?)", rows)
        await db.commit()
