"""Reading the audit log around the API, for assertions."""

from __future__ import annotations

from typing import Any

from ehr.audit.log import aad
from ehr.crypto.canonical import parse_json
from ehr.crypto.envelope import Sealed, open_sealed
from ehr.crypto.keys import KeyStore
from ehr.db.database import Database


async def count(db: Database) -> int:
    row = await db.fetch_one("SELECT count(*) AS n FROM audit_event")
    return int(row["n"]) if row else 0


async def events(db: Database, keys: KeyStore) -> list[dict[str, Any]]:
    """Every AuditEvent, decrypted, oldest first."""
    rows = await db.fetch_all("SELECT * FROM audit_event ORDER BY seq")
    result = []
    for row in rows:
        sealed = Sealed(row["kek_id"], bytes(row["wrapped_key"]), bytes(row["nonce"]), bytes(row["ciphertext"]))
        event: dict[str, Any] = parse_json(open_sealed(keys, sealed, aad(row["id"])))
        result.append(event)
    return result


async def newest(db: Database, keys: KeyStore) -> dict[str, Any]:
    return (await events(db, keys))[-1]
