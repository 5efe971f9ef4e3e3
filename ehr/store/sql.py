"""The store's SQL, written once for both engines ($n parameters; see ehr/db/database.py)."""

from __future__ import annotations

from ehr.db.database import placeholders

VERSION_COLUMNS = (
    "res_type", "res_id", "version", "compartment", "ts_us", "method", "deleted", "actor",
    "content_hash", "prev_hash", "hash", "sig_kid", "signature", "kek_id", "wrapped_key", "nonce", "ciphertext",
)
HEAD_COLUMNS = ("res_type", "res_id", "compartment", "version", "deleted", "ts_us", "hash", "sig_kid", "signature")

NEWEST = (
    "SELECT * FROM resource_version WHERE res_type = $1 AND res_id = $2 ORDER BY version DESC LIMIT 1"
)
VERSION = "SELECT * FROM resource_version WHERE res_type = $1 AND res_id = $2 AND version = $3"
HEAD = "SELECT * FROM resource_head WHERE res_type = $1 AND res_id = $2"
INSERT_VERSION = (
    f"INSERT INTO resource_version ({', '.join(VERSION_COLUMNS)}) "
    f"VALUES ({placeholders(1, len(VERSION_COLUMNS))})"
)
INSERT_HEAD = f"INSERT INTO resource_head ({', '.join(HEAD_COLUMNS)}) VALUES ({placeholders(1, len(HEAD_COLUMNS))})"
UPDATE_HEAD = (
    "UPDATE resource_head SET compartment = $3, version = $4, deleted = $5, ts_us = $6, hash = $7, "
    "sig_kid = $8, signature = $9 WHERE res_type = $1 AND res_id = $2"
)
HISTORY_ORDER = " ORDER BY ts_us DESC, res_type DESC, res_id DESC, version DESC"
CURSOR_BEFORE = "(ts_us, res_type, res_id, version) < ({})"
