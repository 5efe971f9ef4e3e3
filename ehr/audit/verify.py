"""``ehr audit verify``: prove that no audit record was changed, removed, inserted or reordered.

Walks the chain in order (keyset pages): each position must follow the last, name an existing
event whose sealed body opens, hashes to the recorded content hash and agrees with the searchable
columns, and the recomputed chain hash must match; every checkpoint's signature must verify and
its hash equal the chain at its position, and the last checkpoint must cover the whole chain.
Events that are neither chained nor pending were inserted around the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ehr.audit.log import GENESIS, aad, chain_hash, checkpoint_message
from ehr.crypto.canonical import parse_json
from ehr.crypto.envelope import DecryptionError, Sealed, open_sealed
from ehr.crypto.keys import KeyStore
from ehr.crypto.signing import verify_signature
from ehr.db.database import Database, Row

_PAGE = 1000
_CHAIN = (
    "SELECT c.pos, c.event_id, c.hash AS chain_hash, e.* FROM audit_chain c "
    "LEFT JOIN audit_event e ON e.id = c.event_id WHERE c.pos > $1 ORDER BY c.pos LIMIT $2"
)
_STRAYS = (
    "SELECT e.id FROM audit_event e WHERE NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.event_id = e.id) "
    "AND NOT EXISTS (SELECT 1 FROM audit_pending p WHERE p.event_id = e.id) LIMIT 100"
)


@dataclass(frozen=True, slots=True)
class Problem:
    where: str       # "chain 12", "event <id>", "checkpoint 40"
    message: str


@dataclass(slots=True)
class AuditReport:
    chained: int = 0
    pending: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_audit(db: Database, keys: KeyStore) -> AuditReport:
    report = AuditReport()
    hashes: dict[int, bytes] = {}
    checkpoints = await db.fetch_all("SELECT * FROM audit_checkpoint ORDER BY pos")
    wanted = {int(c["pos"]) for c in checkpoints}
    previous, expected = GENESIS, 1
    async for row in _chain(db):
        pos = int(row["pos"])
        if pos != expected:
            report.problems.append(Problem(f"chain {expected}", "positions are missing from the chain"))
        previous = _check_link(keys, row, previous, report)
        if pos in wanted:
            hashes[pos] = previous
        expected = pos + 1
        report.chained += 1
    report.checkpoints = len(checkpoints)
    report.problems += _check_checkpoints(keys, checkpoints, hashes, expected - 1)
    strays = await db.fetch_all(_STRAYS)
    report.problems += [Problem(f"event {s['id']}", "in the log but never chained or pending") for s in strays]
    pending = await db.fetch_one("SELECT count(*) AS n FROM audit_pending")
    report.pending = int(pending["n"]) if pending else 0
    return report


async def _chain(db: Database) -> AsyncIterator[Row]:
    last = 0
    while True:
        rows = await db.fetch_all(_CHAIN, last, _PAGE)
        for row in rows:
            yield row
        if len(rows) < _PAGE:
            return
        last = int(rows[-1]["pos"])


def _check_link(keys: KeyStore, row: Row, previous: bytes, report: AuditReport) -> bytes:
    """Check one chained event; returns the chain hash to continue from (the recorded one)."""
    where = f"chain {row['pos']}"
    recorded = bytes(row["chain_hash"])
    if row["id"] is None:
        report.problems.append(Problem(where, "the chained event was removed"))
        return recorded
    content = bytes(row["content_hash"])
    if chain_hash(previous, int(row["pos"]), row["event_id"], content) != recorded:
        report.problems.append(Problem(where, "chain hash does not match (changed, inserted or reordered)"))
    message = _check_event(keys, row)
    if message:
        report.problems.append(Problem(f"{where} (event {row['event_id']})", message))
    return recorded


def _check_event(keys: KeyStore, row: Row) -> str | None:
    sealed = Sealed(row["kek_id"], bytes(row["wrapped_key"]), bytes(row["nonce"]), bytes(row["ciphertext"]))
    try:
        body = open_sealed(keys, sealed, aad(row["id"]))
    except DecryptionError:
        return "the event does not decrypt for this record (altered or moved)"
    if hashlib.sha256(body).digest() != bytes(row["content_hash"]):
        return "the event does not match its content hash"
    event = parse_json(body)
    if (event.get("action"), event.get("outcome")) != (row["action"], row["outcome"]):
        return "searchable columns disagree with the sealed event"
    return None


def _check_checkpoints(
    keys: KeyStore, checkpoints: list[Row], hashes: dict[int, bytes], length: int
) -> list[Problem]:
    problems: list[Problem] = []
    for checkpoint in checkpoints:
        pos, head = int(checkpoint["pos"]), bytes(checkpoint["hash"])
        where = f"checkpoint {pos}"
        message = checkpoint_message(pos, head, int(checkpoint["ts_us"]))
        if not verify_signature(keys, checkpoint["sig_kid"], message, bytes(checkpoint["signature"])):
            problems.append(Problem(where, "signature does not verify"))
        if hashes.get(pos) != head:
            problems.append(Problem(where, "does not match the chain (the chain was changed or cut)"))
    last = int(checkpoints[-1]["pos"]) if checkpoints else 0
    if last != length:
        problems.append(Problem(f"chain {length}", "the chain's end is not covered by a signed checkpoint"))
    return problems
