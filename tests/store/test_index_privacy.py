"""The search index keeps no name, identifier, phone number or address in plaintext: after loading
patients and searching for them, a dump of every table (and, on SQLite, the database files' bytes)
holds none of those values, in any case or accent form the index normalises to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

FHIR_JSON = "application/fhir+json"
SECRETS = ["Quattlebaum", "Zoë-Anneliese", "MRN-88273-XQ", "+1-555-0147-2231", "Krummholzweg 17", "Oberwinterthur"]
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "name": [{"family": "Quattlebaum", "given": ["Zoë-Anneliese"], "text": "Zoë-Anneliese Quattlebaum"}],
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "MRN-88273-XQ"}],
    "telecom": [{"system": "phone", "value": "+1-555-0147-2231"}],
    "address": [{"line": ["Krummholzweg 17"], "city": "Oberwinterthur"}],
}


def forms(value: str) -> list[bytes]:
    """The value as written, lower-cased and upper-cased (what a normalising index might keep)."""
    return [v.encode() for v in {value, value.lower(), value.upper(), value.casefold()}]


async def dump(engine: AsyncEngine, database_url: str) -> bytes:
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        cells: list[bytes] = []
        for table in tables:
            result = await conn.execute(text(f'SELECT * FROM "{table}"'))
            cells += [v if isinstance(v, bytes) else str(v).encode() for row in result for v in row]
    assert len(tables) >= 10 and cells
    out = b"\n".join(cells)
    if database_url.startswith("sqlite"):
        path = Path(database_url.split(":///", 1)[1])
        for file in (path, path.with_name(path.name + "-wal")):
            if file.exists():
                out += file.read_bytes()
    return out


async def test_a_database_dump_holds_no_name_identifier_phone_or_address(
    fhir: httpx.AsyncClient, engine: AsyncEngine, database_url: str
) -> None:
    created = await fhir.post("Patient", json=PATIENT, headers={"Content-Type": FHIR_JSON})
    assert created.status_code == 201
    for query in ("family=quattle", "identifier=MRN-88273-XQ", "phone=%2B1-555-0147-2231", "address-city=oberw"):
        response = await fhir.get(f"Patient?{query}")
        assert response.status_code == 200 and response.json()["total"] == 1, query
    everything = await dump(engine, database_url)
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in everything, f"{secret!r} found in the database"
