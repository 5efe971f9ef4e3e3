"""Keyed pseudonyms for what leaves the server in the SIEM feed (docs/adr/0006-audit-log.md).

A patient is named outside the server only as ``HMAC-SHA256(k, "Patient/" + id)``, cut to 128 bits,
hex. ``k`` is HKDF-SHA256 (RFC 5869) of a dedicated 32-byte secret with the info
``ehr-audit-pseudonym-v1/patient``, so the same secret can key other labels later without two uses
ever sharing a key. The same patient gets the same pseudonym in every event and every process (a SIEM
can correlate), and without the secret a pseudonym cannot be turned back into an id, even for ids
that are guessable (imported MRN-like ids).

The secret lives in ``<home>/keys/pseudonym.secret`` (beside the key store's keys, 0600, never in
the database). ``ehr init`` creates it; a server only loads it, so that several nodes can never
quietly make different ones: copy it with the keys. It is not rotated: a new secret would break
every correlation the SIEM holds (a deliberate choice an operator makes by replacing the file).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ehr.errors import Category, EhrError

SECRET_FILE = "pseudonym.secret"
SECRET_BYTES = 32
_INFO = b"ehr-audit-pseudonym-v1/"


class Pseudonyms:
    """Pseudonyms under one secret; the repr shows nothing of it."""

    __slots__ = ("_patient_key",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"a pseudonym secret is {SECRET_BYTES} bytes")
        self._patient_key = _derive(secret, "patient")

    def patient(self, patient_id: str) -> str:
        mac = hmac.new(self._patient_key, f"Patient/{patient_id}".encode(), hashlib.sha256)
        return mac.hexdigest()[:32]

    def __repr__(self) -> str:
        return "Pseudonyms(...)"


def _derive(secret: bytes, label: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + label.encode())
    return hkdf.derive(secret)


def load_pseudonyms(keys_dir: Path) -> Pseudonyms:
    """The pseudonyms of this installation; a clear error when ``ehr init`` has not made the secret."""
    path = Path(keys_dir) / SECRET_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise EhrError(Category.INTERNAL, f"no pseudonym secret at {path}; run `ehr init`") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise EhrError(Category.INTERNAL, f"{path} must be a regular file open to its owner only (chmod 600)")
        secret = os.read(fd, SECRET_BYTES + 1)
    finally:
        os.close(fd)
    if len(secret) != SECRET_BYTES:
        raise EhrError(Category.INTERNAL, f"{path} does not hold exactly {SECRET_BYTES} bytes")
    return Pseudonyms(secret)


def ensure_pseudonym_secret(keys_dir: Path) -> Path:
    """Create the secret if absent (temp file, fsync, hard link: atomic, never replaces one)."""
    path = Path(keys_dir) / SECRET_FILE
    if path.exists():
        return path
    tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(SECRET_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first; theirs stands
    finally:
        tmp.unlink()
    return path
