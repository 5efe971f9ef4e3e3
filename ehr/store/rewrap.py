"""``ehr keys rewrap``: move every data key under the active KEK. Only the wrapping columns change;
content, hashes, signatures and ciphertexts stay as written (the table's guard allows exactly this)."""

from __future__ import annotations

from ehr.crypto.envelope import rewrap
from ehr.crypto.keys import KeyStore
from ehr.db.database import Database
from ehr.store.records import aad, sealed_of

_BATCH = 500
_PENDING = "SELECT * FROM resource_version WHERE kek_id IS NOT NULL AND kek_id <> $1 LIMIT $2"
_UPDATE = (
    "UPDATE resource_version SET kek_id = $1, wrapped_key = $2 WHERE res_type = $3 AND res_id = $4 AND version = $5"
)


async def rewrap_all(db: Database, keys: KeyStore) -> int:
    """Re-wrap in batches of committed transactions; safe to interrupt and run again."""
    active, _ = keys.active_kek()
    done = 0
    while True:
        async with db.transaction() as tx:
            rows = await tx.fetch_all(_PENDING, active, _BATCH)
            for row in rows:
                sealed = rewrap(keys, sealed_of(row), aad(row["res_type"], row["res_id"], row["version"]))
                await tx.execute(
                    _UPDATE, sealed.kek_id, sealed.wrapped_key, row["res_type"], row["res_id"], row["version"]
                )
        done += len(rows)
        if len(rows) < _BATCH:
            return done
