"""A stored version, as pure functions over bytes and keys: seal, chain, sign; open; check.

Layout of one version (docs/adr/0004-storage.md):
  body       = canonical JSON of the resource, meta.versionId and meta.lastUpdated set by the server
  content    = SHA-256(body)                                  (absent for a delete tombstone)
  header     = canonical JSON {actor, contentHash, deleted, id, lastUpdated, method, prevHash, type, versionId}
  hash       = SHA-256("ehr-version-v1\\n" || header)          chained: prevHash is the previous version's hash
  signature  = Ed25519(hash) under the key id sig_kid
  ciphertext = AES-256-GCM(body) under a per-record data key wrapped by the active KEK,
               AAD = "Type/id/_history/n", so a body moved to another row does not open.
The head of each resource is signed over a different message ("ehr-head-v1"), so an old head can
not be rebuilt from a version row after the newest version is removed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ehr.crypto.canonical import canonical_json
from ehr.crypto.envelope import DecryptionError, Sealed, open_sealed, seal
from ehr.crypto.keys import KeyStore
from ehr.crypto.signing import verify_signature
from ehr.db.database import Row

GENESIS = bytes(32)
_VERSION_DOMAIN = b"ehr-version-v1\n"
_HEAD_DOMAIN = b"ehr-head-v1\n"


@dataclass(frozen=True, slots=True)
class Version:
    """One version as the API sees it: plaintext body (None for a tombstone) and its metadata."""

    res_type: str
    res_id: str
    version: int
    ts_us: int
    deleted: bool
    method: str
    body: bytes | None

    @property
    def last_updated(self) -> str:
        return instant(self.ts_us)

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


def instant(ts_us: int) -> str:
    """FHIR instant (UTC, microseconds) for a timestamp in microseconds."""
    moment = datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_us % 1_000_000:06d}Z"


def aad(res_type: str, res_id: str, version: int) -> bytes:
    return f"{res_type}/{res_id}/_history/{version}".encode()


def version_header(row: Row) -> bytes:
    content = row["content_hash"]
    return canonical_json(
        {
            "actor": row["actor"],
            "contentHash": content.hex() if content is not None else None,
            "deleted": bool(row["deleted"]),
            "id": row["res_id"],
            "lastUpdated": instant(row["ts_us"]),
            "method": row["method"],
            "prevHash": bytes(row["prev_hash"]).hex(),
            "type": row["res_type"],
            "versionId": row["version"],
        }
    )


def version_hash(row: Row) -> bytes:
    return hashlib.sha256(_VERSION_DOMAIN + version_header(row)).digest()


def head_message(res_type: str, res_id: str, version: int, chain_hash: bytes) -> bytes:
    return _HEAD_DOMAIN + canonical_json(
        {"hash": chain_hash.hex(), "id": res_id, "type": res_type, "versionId": version}
    )


def seal_version(keys: KeyStore, row: dict[str, Any], body: bytes | None) -> dict[str, Any]:
    """Complete a version row (identity, time, actor, prev_hash set) with content, hash, signature, ciphertext."""
    row["content_hash"] = hashlib.sha256(body).digest() if body is not None else None
    row["hash"] = version_hash(row)
    signer = keys.signer()
    row["sig_kid"] = signer.kid
    row["signature"] = signer.sign(row["hash"])
    if body is None:
        row.update(kek_id=None, wrapped_key=None, nonce=None, ciphertext=None)
    else:
        sealed = seal(keys, body, aad(row["res_type"], row["res_id"], row["version"]))
        row.update(
            kek_id=sealed.kek_id, wrapped_key=sealed.wrapped_key, nonce=sealed.nonce, ciphertext=sealed.ciphertext
        )
    return row


def head_row(keys: KeyStore, row: Row) -> dict[str, Any]:
    signer = keys.signer()
    message = head_message(row["res_type"], row["res_id"], row["version"], row["hash"])
    return {
        "res_type": row["res_type"],
        "res_id": row["res_id"],
        "compartment": row["compartment"],
        "version": row["version"],
        "deleted": row["deleted"],
        "ts_us": row["ts_us"],
        "hash": row["hash"],
        "sig_kid": signer.kid,
        "signature": signer.sign(message),
    }


def sealed_of(row: Row) -> Sealed:
    return Sealed(
        kek_id=row["kek_id"],
        wrapped_key=bytes(row["wrapped_key"]),
        nonce=bytes(row["nonce"]),
        ciphertext=bytes(row["ciphertext"]),
    )


def open_body(keys: KeyStore, row: Row) -> bytes | None:
    """The plaintext body of a version row; raises DecryptionError when it was tampered with or moved."""
    if row["ciphertext"] is None:
        return None
    return open_sealed(keys, sealed_of(row), aad(row["res_type"], row["res_id"], row["version"]))


def to_version(keys: KeyStore, row: Row) -> Version:
    return Version(
        res_type=row["res_type"],
        res_id=row["res_id"],
        version=row["version"],
        ts_us=row["ts_us"],
        deleted=bool(row["deleted"]),
        method=row["method"],
        body=open_body(keys, row),
    )


def check_version(keys: KeyStore, row: Row) -> list[str]:
    """Everything that is wrong with one version row on its own (the chain is checked by the caller)."""
    problems: list[str] = []
    if version_hash(row) != bytes(row["hash"]):
        problems.append("hash does not match the recorded header")
    if not verify_signature(keys, row["sig_kid"], bytes(row["hash"]), bytes(row["signature"])):
        problems.append("signature does not verify")
    if row["deleted"] != (row["ciphertext"] is None):
        problems.append("tombstone flag disagrees with the stored body")
        return problems
    try:
        body = open_body(keys, row)
    except DecryptionError:
        problems.append("body does not decrypt for this record (altered or moved)")
        return problems
    if body is not None and row["content_hash"] is not None:
        if hashlib.sha256(body).digest() != bytes(row["content_hash"]):
            problems.append("body does not match its content hash")
    return problems


def check_head(keys: KeyStore, head: Row) -> bool:
    message = head_message(head["res_type"], head["res_id"], head["version"], bytes(head["hash"]))
    return verify_signature(keys, head["sig_kid"], message, bytes(head["signature"]))
