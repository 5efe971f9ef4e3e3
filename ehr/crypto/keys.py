"""Key stores: AES-256 key-encryption keys (KEKs), Ed25519 signing keys and the search index key, by key id.

A key id is ``<kind>-<sequence>-<8 hex>``, e.g. ``kek-000002-9f1c03aa``; the highest sequence
of a kind is the active key, older ones stay for opening and verifying what they made. The index
key (``idx``) keys the blind search index (docs/adr/0008-search-index.md); there is no rotation
command for it, since a new one means re-indexing every resource.

``FileKeyStore`` keeps one file per key in a directory that must live outside the database:
``<dir>/<kid>.key`` holding 32 raw bytes (the AES key, or the RFC 8032 §5.1.5 Ed25519 private
key), files 0600 in a 0700 directory. A new key is written to a temporary file, fsynced and
hard-linked into place, so readers see whole keys only and no existing key is ever replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ehr.crypto.signing import Signer, public_jwk

KEY_BYTES = 32
Kind = Literal["kek", "sig", "idx"]
_KINDS: tuple[Kind, ...] = ("kek", "sig", "idx")
_KIND_NAMES: dict[Kind, str] = {"kek": "key-encryption key", "sig": "signing key", "idx": "search index key"}
T = TypeVar("T")
_KID = re.compile(r"(kek|sig|idx)-(\d{6,})-([0-9a-f]{8})")
_SUFFIX = ".key"
_RACY_NS = 2_000_000_000


class UnknownKey(KeyError):
    """No key with this id (the id itself is not secret)."""


class KeyStoreError(Exception):
    """The key directory is missing, unsafe or malformed; the message says which and how to fix."""


@runtime_checkable
class KeyStore(Protocol):
    def active_kek(self) -> tuple[str, bytes]: ...
    def kek(self, kid: str) -> bytes: ...
    def signer(self) -> Signer: ...
    def verification_key(self, kid: str) -> Ed25519PublicKey: ...
    def jwks(self) -> dict[str, Any]: ...
    def index_key(self) -> bytes: ...


def _order(kid: str) -> tuple[int, str]:
    _, seq, suffix = kid.split("-")
    return int(seq), suffix


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One consistent view of the keys; replaced whole, never mutated."""

    keks: dict[str, bytes] = field(repr=False)
    signing: dict[str, Ed25519PrivateKey] = field(repr=False)
    public: dict[str, Ed25519PublicKey] = field(repr=False)
    active_kek: str
    active_signing: str
    index: bytes = field(repr=False)

    @classmethod
    def of(cls, material: dict[Kind, dict[str, bytes]], where: str) -> _Snapshot:
        keks, seeds, index = material["kek"], material["sig"], material["idx"]
        for kind, name in _KIND_NAMES.items():
            if not material[kind]:
                raise KeyStoreError(f"no {name} in {where}; run `ehr init` (FileKeyStore.create)")
        signing = {kid: Ed25519PrivateKey.from_private_bytes(s) for kid, s in seeds.items()}
        return cls(
            keks=dict(keks),
            signing=signing,
            public={kid: key.public_key() for kid, key in signing.items()},
            active_kek=max(keks, key=_order),
            active_signing=max(seeds, key=_order),
            index=index[max(index, key=_order)],
        )


class _KeyRing:
    """The KeyStore methods over a snapshot; subclasses say how to refresh it."""

    _snapshot: _Snapshot

    def active_kek(self) -> tuple[str, bytes]:
        snap = self._current()
        return snap.active_kek, snap.keks[snap.active_kek]

    def kek(self, kid: str) -> bytes:
        return self._find(kid, lambda s: s.keks.get(kid))

    def signer(self) -> Signer:
        snap = self._current()
        return Signer(snap.active_signing, snap.signing[snap.active_signing])

    def verification_key(self, kid: str) -> Ed25519PublicKey:
        return self._find(kid, lambda s: s.public.get(kid))

    def index_key(self) -> bytes:
        return self._current().index

    def jwks(self) -> dict[str, Any]:
        public = self._current().public
        return {"keys": [public_jwk(kid, public[kid]) for kid in sorted(public, key=_order, reverse=True)]}

    def _find(self, kid: str, get: Callable[[_Snapshot], T | None]) -> T:
        found = get(self._snapshot)
        if found is None and _KID.fullmatch(kid):
            found = get(self._reloaded())
        if found is None:
            raise UnknownKey(kid)
        return found

    def _current(self) -> _Snapshot:
        return self._snapshot

    def _reloaded(self) -> _Snapshot:
        return self._snapshot

    def __repr__(self) -> str:
        snap = self._snapshot
        return f"{type(self).__name__}(kek={snap.active_kek!r}, signing={snap.active_signing!r})"


class MemoryKeyStore(_KeyRing):
    """In-memory twin for tests: every key derives from ``seed`` (HMAC-SHA256), so runs repeat."""

    def __init__(self, seed: bytes = b"ehr-test-keys") -> None:
        self._seed = seed
        self._material: dict[Kind, dict[str, bytes]] = {"kek": {}, "sig": {}, "idx": {}}
        for kind in _KINDS:
            self._add(kind)

    def rotate_kek(self) -> str:
        return self._add("kek")

    def rotate_signing_key(self) -> str:
        return self._add("sig")

    def _add(self, kind: Kind) -> str:
        keys = self._material[kind]
        label = f"{kind}-{len(keys) + 1:06d}"
        kid = f"{label}-{self._derive(label + '/id')[:4].hex()}"
        keys[kid] = self._derive(label)
        if all(self._material.values()):
            self._snapshot = _Snapshot.of(self._material, "MemoryKeyStore")
        return kid

    def _derive(self, label: str) -> bytes:
        return hmac.new(self._seed, label.encode(), hashlib.sha256).digest()


class FileKeyStore(_KeyRing):
    """Keys in ``directory`` (see the module docstring); picks up rotations by other processes."""

    CHECK_INTERVAL_S = 1.0  # how often the directory is looked at for rotations by other processes

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._stamp: tuple[int, int] | None = None
        self._snapshot = self._reloaded()
        self._checked = time.monotonic()

    @classmethod
    def create(cls, directory: Path) -> FileKeyStore:
        """Make the directory and a first key of each kind if absent; existing keys are kept."""
        directory = Path(directory)
        try:
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)
        except FileExistsError:
            pass
        present = {kind for kind, _ in _list_keys(directory)}
        for kind in _KINDS:
            if kind not in present:
                _write_key(directory, _new_kid(kind, 1))
        return cls(directory)

    def rotate_kek(self) -> str:
        return self._rotate("kek")

    def rotate_signing_key(self) -> str:
        return self._rotate("sig")

    def _rotate(self, kind: Kind) -> str:
        seq = 1 + max((_order(kid)[0] for k, kid in _list_keys(self._directory) if k == kind), default=0)
        kid = _new_kid(kind, seq)
        _write_key(self._directory, kid)
        self._snapshot = self._reloaded()
        return kid

    def _current(self) -> _Snapshot:
        """The keys, re-read when the directory changed; looked at most once a CHECK_INTERVAL_S (a stat
        per call showed in write profiles). An unknown kid is still re-read at once (_KeyRing)."""
        now = time.monotonic()
        if now - self._checked < self.CHECK_INTERVAL_S:
            return self._snapshot
        self._checked = now
        stamp = _stamp(self._directory)
        if stamp is None or stamp != self._stamp:
            self._snapshot = self._reloaded()
        return self._snapshot

    def _reloaded(self) -> _Snapshot:
        stamp = _stamp(self._directory)
        material: dict[Kind, dict[str, bytes]] = {"kek": {}, "sig": {}, "idx": {}}
        for kind, kid in _list_keys(self._directory):
            material[kind][kid] = _read_key(self._directory / (kid + _SUFFIX))
        snapshot = _Snapshot.of(material, str(self._directory))
        self._snapshot, self._stamp = snapshot, stamp
        return snapshot

    def __repr__(self) -> str:
        snap = self._snapshot
        return f"FileKeyStore({str(self._directory)!r}, kek={snap.active_kek!r}, signing={snap.active_signing!r})"


# ---------------------------------------------------------------------------------------------
# Files


def _new_kid(kind: Kind, seq: int) -> str:
    return f"{kind}-{seq:06d}-{secrets.token_hex(4)}"


def _stamp(directory: Path) -> tuple[int, int] | None:
    """Changes whenever a key file is added or removed; None while a change may be too recent
    for the directory's mtime granularity to show it (git's "racy" rule)."""
    st = _private_directory(directory)
    if time.time_ns() - st.st_mtime_ns < _RACY_NS:
        return None
    return st.st_mtime_ns, st.st_ino


def _private_directory(directory: Path) -> os.stat_result:
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise KeyStoreError(f"key directory {directory} does not exist; create it first") from None
    if not stat.S_ISDIR(st.st_mode):
        raise KeyStoreError(f"key directory {directory} is not a directory")
    if st.st_mode & 0o077:
        raise KeyStoreError(
            f"key directory {directory} is open to group or others (mode {st.st_mode & 0o777:o}); chmod 700 it"
        )
    return st


def _list_keys(directory: Path) -> list[tuple[Kind, str]]:
    _private_directory(directory)
    found: list[tuple[Kind, str]] = []
    for name in sorted(os.listdir(directory)):
        kid = name.removesuffix(_SUFFIX)
        match = _KID.fullmatch(kid)
        if name.endswith(_SUFFIX) and match:
            kind: Kind = "kek" if match.group(1) == "kek" else "sig" if match.group(1) == "sig" else "idx"
            found.append((kind, kid))
    return found


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:  # a symlink (ELOOP), a vanished or unreadable file
        raise KeyStoreError(f"cannot open key file {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyStoreError(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyStoreError(
                f"key file {path} is open to group or others (mode {st.st_mode & 0o777:o}); chmod 600 it"
            )
        data = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_BYTES:
        raise KeyStoreError(f"key file {path} does not hold exactly {KEY_BYTES} bytes")
    return data


def _write_key(directory: Path, kid: str) -> None:
    """Write a fresh random key: temp file, fsync, hard link (atomic, never replaces), fsync dir."""
    tmp = directory / f".tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            if os.write(fd, secrets.token_bytes(KEY_BYTES)) != KEY_BYTES:
                raise KeyStoreError(f"short write to {tmp}")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, directory / (kid + _SUFFIX))
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
