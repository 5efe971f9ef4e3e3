"""The audit log: how AuditEvents become durable and tamper-evident (docs/adr/0006-audit-log.md).

1. Record. Every event is sealed (AES-256-GCM, like resource bodies) and inserted with the columns
   review searches on, plus a row in ``audit_pending``. A write's event goes in the same transaction
   as its data (:meth:`AuditLog.statements`); any other event through :meth:`AuditLog.record`, which
   group-commits concurrent events into one transaction and returns only once they are durable, so
   no response leaves before its event is on disk.
2. Seal. :meth:`AuditLog.seal` (a loop in every process; one at a time holds the lock) appends the
   pending events to a hash chain in a stable order and signs a checkpoint of the chain's head. On
   PostgreSQL it takes only events whose transaction is older than every transaction still running
   (xid below the snapshot's xmin), so an event committed late can never be skipped.
3. Verify. ``ehr audit verify`` (ehr/audit/verify.py) recomputes the chain and checkpoints.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ehr.audit.events import Interaction, build
from ehr.context import AccessContext
from ehr.crypto.canonical import canonical_json
from ehr.crypto.envelope import seal
from ehr.crypto.keys import KeyStore
from ehr.db import bulk
from ehr.db.database import Database, Executor, Row, Statement
from ehr.errors import Category, EhrError
from ehr.store.records import instant

log = logging.getLogger("ehr.audit")

GENESIS = bytes(32)
_CHAIN_DOMAIN = b"ehr-audit-chain-v1\n"
_CHECKPOINT_DOMAIN = b"ehr-audit-checkpoint-v1\n"
_SEAL_LOCK = 0x0E4B5C4F  # pg advisory lock key of the sealer
_BATCH = 200
_SEAL_BATCH = 5000

EVENT_COLUMNS = (
    "id", "recorded_us", "action", "subtype", "outcome", "agent", "patient", "entity_type", "entity_id",
    "purpose", "address", "content_hash", "kek_id", "wrapped_key", "nonce", "ciphertext",
)
_XID = {"postgresql": "pg_current_xact_id()::text::bigint", "sqlite": "0"}  # the writing transaction's id
_HORIZON = {
    "postgresql": "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin",
    "sqlite": "SELECT 1 AS xmin",  # BEGIN IMMEDIATE: no other writer is running
}
_READY = (
    "SELECT p.event_id, e.content_hash, e.recorded_us, e.action, e.subtype, e.outcome, e.agent, e.patient, "
    "e.purpose, e.address FROM audit_pending p JOIN audit_event e ON e.id = p.event_id "
    "WHERE p.xid < $1 ORDER BY e.seq LIMIT $2"
)


_INSERT_CHAIN = "INSERT INTO audit_chain (pos, event_id, hash) VALUES ($1, $2, $3)"


def _cut(value: str | None, width: int) -> str | None:
    return value[:width] if value is not None else None


def aad(event_id: str) -> bytes:
    return f"AuditEvent/{event_id}".encode()


def chain_hash(previous: bytes, pos: int, event_id: str, content_hash: bytes) -> bytes:
    material = _CHAIN_DOMAIN + previous + pos.to_bytes(8, "big") + event_id.encode() + b"\n" + content_hash
    return hashlib.sha256(material).digest()


def checkpoint_message(pos: int, head: bytes, ts_us: int) -> bytes:
    return _CHECKPOINT_DOMAIN + canonical_json({"hash": head.hex(), "pos": pos, "ts": ts_us})


@dataclass(frozen=True, slots=True)
class Recorded:
    event_id: str
    row: dict[str, Any]
    statements: list[Statement]


def insert_statements(rows: Sequence[dict[str, Any]], dialect: str) -> list[Statement]:
    """The events and their pending marks; on PostgreSQL one fixed text per table whatever the count."""
    ids = [row["id"] for row in rows]
    events = bulk.insert(dialect, "audit_event", EVENT_COLUMNS, [[row[c] for c in EVENT_COLUMNS] for row in rows])
    if dialect == "postgresql":
        marks = f"INSERT INTO audit_pending (event_id, xid) SELECT u, {_XID[dialect]} FROM unnest($1::text[]) AS u"
        return [*events, (marks, [ids])]
    return [*events, *bulk.insert(dialect, "audit_pending", ("event_id", "xid"), [(i, 0) for i in ids])]


class AuditLog:
    def __init__(self, db: Database, keys: KeyStore, clock: Any, source: str) -> None:
        self._db = db
        self._keys = keys
        self._clock = clock
        self._source = source
        self._queue: list[tuple[Recorded, asyncio.Future[None]]] = []
        self._flushing = False
        # Told (first chain position, rows) after each sealing commit; must return at once (alerts).
        self.on_sealed: Callable[[int, Sequence[Row]], None] | None = None

    # -- record ------------------------------------------------------------------------------

    def prepare(self, ctx: AccessContext, what: Interaction) -> Recorded:
        """The event as statements, for a caller that commits them with its own data."""
        event_id = str(uuid.uuid4())
        recorded_us = self._clock.now_us()
        event = build(ctx, what, event_id=event_id, recorded=instant(recorded_us), source=self._source)
        # An event holds only ASCII keys and str/int/bool values: for such values the stdlib encoder
        # with sorted keys writes exactly RFC 8785 (tests/audit/test_log.py holds it equal to
        # canonical_json), at half the cost on a path every read takes.
        body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        sealed = seal(self._keys, body, aad(event_id))
        row = {
            "id": event_id,
            "recorded_us": recorded_us,
            "action": what.action,
            "subtype": what.subtype,
            "outcome": what.outcome,
            "agent": ctx.actor,
            # Columns hold what review searches on, cut to their width (a request may name anything);
            # the sealed event keeps what was asked in full.
            "patient": _cut(what.patient, 64),
            "entity_type": _cut(what.resource_type, 64),
            "entity_id": _cut(what.resource_id, 64),
            "purpose": ctx.purpose,
            "address": ctx.address.rsplit(":", 1)[0] if ctx.address else None,
            "content_hash": hashlib.sha256(body).digest(),
            "kek_id": sealed.kek_id,
            "wrapped_key": sealed.wrapped_key,
            "nonce": sealed.nonce,
            "ciphertext": sealed.ciphertext,
        }
        return Recorded(event_id, row, insert_statements([row], self._db.dialect))

    async def record(self, ctx: AccessContext, what: Interaction) -> str:
        """Write one event on its own; returns once it is durable (group-committed with others)."""
        prepared = self.prepare(ctx, what)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((prepared, done))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await done
        return prepared.event_id

    @asynccontextmanager
    async def audited(self, ctx: AccessContext, what: Interaction) -> AsyncIterator[Interaction]:
        """Exactly one AuditEvent for the block, whatever happens in it: in the block's own write
        transaction when it set ``what.committed`` (see :meth:`prepare`), otherwise recorded here,
        durably, before the caller can answer. Failures are recorded with their category."""
        ctx.trail.recorded = True
        try:
            yield what
        except EhrError as err:
            what.committed = False
            what.failed(err.category, err.message)
            await self.record(ctx, what)
            raise
        except (Exception, asyncio.CancelledError):
            what.committed = False
            what.failed(Category.INTERNAL, "internal error")
            await self.record(ctx, what)
            raise
        if not what.committed:
            await self.record(ctx, what)

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:_BATCH], self._queue[_BATCH:]
                await self._commit(batch)
        finally:
            self._flushing = False  # no await between the last emptiness check and this

    async def _commit(self, batch: list[tuple[Recorded, asyncio.Future[None]]]) -> None:
        statements = insert_statements([prepared.row for prepared, _ in batch], self._db.dialect)
        try:
            await self._db.execute_all(statements)
        except Exception as exc:  # noqa: BLE001 - every waiter learns its event was not recorded
            log.error("audit write failed: %s", type(exc).__name__)
            for _, done in batch:
                if not done.done():
                    done.set_exception(EhrError(Category.INTERNAL, "the audit log is unavailable"))
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)

    # -- seal --------------------------------------------------------------------------------

    async def seal(self) -> int:
        """Append ready pending events to the chain and sign a checkpoint; returns how many."""
        async with self._db.transaction() as tx:
            if self._db.dialect == "postgresql":
                got = await tx.fetch_one("SELECT pg_try_advisory_xact_lock($1) AS ok", _SEAL_LOCK)
                if not got or not got["ok"]:
                    return 0  # another process is sealing
            horizon = await tx.fetch_one(_HORIZON[self._db.dialect])
            assert horizon is not None
            ready = await tx.fetch_all(_READY, int(horizon["xmin"]), _SEAL_BATCH)
            if not ready:
                return 0
            first = await self._extend(tx, ready)
        if self.on_sealed is not None:
            self.on_sealed(first, ready)
        return len(ready)

    async def _extend(self, tx: Executor, ready: Sequence[Any]) -> int:
        """Chain ``ready`` after the head; returns the position of the first."""
        head = await tx.fetch_one("SELECT pos, hash FROM audit_chain ORDER BY pos DESC LIMIT 1")
        pos, previous = (int(head["pos"]), bytes(head["hash"])) if head else (0, GENESIS)
        first = pos + 1
        chain: list[Statement] = []
        for item in ready:
            pos += 1
            previous = chain_hash(previous, pos, item["event_id"], bytes(item["content_hash"]))
            chain.append((_INSERT_CHAIN, [pos, item["event_id"], previous]))
        ts_us = self._clock.now_us()
        signer = self._keys.signer()
        signature = signer.sign(checkpoint_message(pos, previous, ts_us))
        chain.append(
            (
                "INSERT INTO audit_checkpoint (pos, hash, ts_us, sig_kid, signature) VALUES ($1, $2, $3, $4, $5)",
                [pos, previous, ts_us, signer.kid, signature],
            )
        )
        ids = [item["event_id"] for item in ready]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ", ".join(f"${n}" for n in range(1, len(part) + 1))
            chain.append((f"DELETE FROM audit_pending WHERE event_id IN ({marks})", part))
        await tx.execute_all(chain)
        return first

    async def run_sealer(self, interval: float) -> None:
        """Seal every ``interval`` seconds until cancelled."""
        while True:
            try:
                while await self.seal() >= _SEAL_BATCH:
                    pass
            except Exception as exc:  # noqa: BLE001 - keep sealing; events stay pending meanwhile
                log.error("audit sealing failed: %s", type(exc).__name__)
            await asyncio.sleep(interval + secrets.randbelow(100) / 1000)
