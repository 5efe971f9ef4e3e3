"""``ehr keys rewrap``: move every data key under the active KEK. Only the wrapping columns change;
content, hashes, signatures and ciphertexts stay as written (the table's guard allows exactly this)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.crypto.envelope import rewrap
from ehr.crypto.keys import KeyStore
from ehr.db.engine import write_connection
from ehr.db.schema import resource_version
from ehr.store.records import aad, sealed_of

_BATCH = 500


async def rewrap_all(engine: AsyncEngine, keys: KeyStore) -> int:
    """Re-wrap in batches of committed transactions; safe to interrupt and run again."""
    active, _ = keys.active_kek()
    v = resource_version.c
    done = 0
    while True:
        conn = await write_connection(engine)
        try:
            async with conn.begin():
                query = (
                    select(resource_version)
                    .where(v.kek_id.is_not(None), v.kek_id != active)
                    .limit(_BATCH)
                )
                rows = (await conn.execute(query)).mappings().all()
                for row in rows:
                    sealed = rewrap(keys, sealed_of(row), aad(row["res_type"], row["res_id"], row["version"]))
                    await conn.execute(
                        update(resource_version)
                        .where(v.res_type == row["res_type"], v.res_id == row["res_id"], v.version == row["version"])
                        .values(kek_id=sealed.kek_id, wrapped_key=sealed.wrapped_key)
                    )
        finally:
            await conn.close()
        done += len(rows)
        if len(rows) < _BATCH:
            return done
