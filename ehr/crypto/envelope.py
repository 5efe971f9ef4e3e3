"""Envelope encryption: AES-256-GCM (NIST SP 800-38D) under a fresh data key per record.

    body     = AES-256-GCM(dek, nonce, plaintext, aad=frame("body", aad))
    wrapped  = wnonce || AES-256-GCM(kek, wnonce, dek, aad=frame("wrap", kek_id, aad))

The caller's ``aad`` names the record (e.g. ``b"Patient/123/_history/2"``). It is bound to both
the body and the wrapped data key, and the wrap is also bound to ``kek_id``, so neither part can
be moved to another record or relabelled to another key. The body's AAD leaves out the key id,
so ``rewrap`` can move the data key under a new KEK without touching the ciphertext.
Both nonces are random 96-bit values; a KEK should wrap well under 2**32 keys (SP 800-38D §8.3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ehr.crypto.keys import KeyStore

NONCE_BYTES = 12
DEK_BYTES = 32
TAG_BYTES = 16
WRAPPED_BYTES = NONCE_BYTES + DEK_BYTES + TAG_BYTES
_DOMAIN = b"ehr-envelope-v1"


@dataclass(frozen=True, slots=True)
class Sealed:
    kek_id: str
    wrapped_key: bytes  # wnonce (12) || AES-GCM(kek, dek) with tag (48)
    nonce: bytes  # 12 bytes
    ciphertext: bytes  # includes the 16-byte GCM tag


class DecryptionError(Exception):
    """The record cannot be opened; deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


def seal(keys: KeyStore, plaintext: bytes, aad: bytes) -> Sealed:
    kek_id, kek = keys.active_kek()
    dek = AESGCM.generate_key(bit_length=8 * DEK_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(dek).encrypt(nonce, plaintext, _frame(b"body", aad))
    return Sealed(kek_id, _wrap(kek_id, kek, dek, aad), nonce, ciphertext)


def open_sealed(keys: KeyStore, sealed: Sealed, aad: bytes) -> bytes:
    dek = _unwrap(keys, sealed, aad)
    if len(sealed.nonce) != NONCE_BYTES:
        raise DecryptionError
    try:
        return AESGCM(dek).decrypt(sealed.nonce, sealed.ciphertext, _frame(b"body", aad))
    except InvalidTag:
        raise DecryptionError from None


def rewrap(keys: KeyStore, sealed: Sealed, aad: bytes) -> Sealed:
    """Move the data key under the active KEK; the body is kept byte for byte."""
    dek = _unwrap(keys, sealed, aad)
    kek_id, kek = keys.active_kek()
    return Sealed(kek_id, _wrap(kek_id, kek, dek, aad), sealed.nonce, sealed.ciphertext)


def _wrap(kek_id: str, kek: bytes, dek: bytes, aad: bytes) -> bytes:
    wnonce = os.urandom(NONCE_BYTES)
    return wnonce + AESGCM(kek).encrypt(wnonce, dek, _frame(b"wrap", kek_id.encode(), aad))


def _unwrap(keys: KeyStore, sealed: Sealed, aad: bytes) -> bytes:
    if len(sealed.wrapped_key) != WRAPPED_BYTES:
        raise DecryptionError
    try:
        kek = keys.kek(sealed.kek_id)
    except KeyError:  # UnknownKey
        raise DecryptionError from None
    wnonce, wrapped = sealed.wrapped_key[:NONCE_BYTES], sealed.wrapped_key[NONCE_BYTES:]
    try:
        return AESGCM(kek).decrypt(wnonce, wrapped, _frame(b"wrap", sealed.kek_id.encode(), aad))
    except InvalidTag:
        raise DecryptionError from None


def _frame(*parts: bytes) -> bytes:
    """Unambiguous AAD: the domain, then each part with a 4-byte big-endian length."""
    return _DOMAIN + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
