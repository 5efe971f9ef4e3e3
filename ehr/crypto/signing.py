"""Ed25519 signatures (RFC 8032) over bytes, verified against a key store by key id."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

if TYPE_CHECKING:
    from ehr.crypto.keys import KeyStore


class Signer:
    """The active signing key; its repr shows only the key id."""

    __slots__ = ("kid", "_private_key")

    def __init__(self, kid: str, private_key: Ed25519PrivateKey) -> None:
        self.kid = kid
        self._private_key = private_key

    def sign(self, data: bytes) -> bytes:
        return self._private_key.sign(data)

    def public_key(self) -> Ed25519PublicKey:
        return self._private_key.public_key()

    def __repr__(self) -> str:
        return f"Signer(kid={self.kid!r})"


def verify_signature(keys: KeyStore, kid: str, data: bytes, signature: bytes) -> bool:
    """True only for a valid signature by the key ``kid``; False for anything else."""
    try:
        keys.verification_key(kid).verify(signature, data)
    except (KeyError, InvalidSignature):  # UnknownKey is a KeyError
        return False
    return True


def public_jwk(kid: str, key: Ed25519PublicKey) -> dict[str, str]:
    """RFC 8037 §2: an OKP/Ed25519 public JWK; never carries the private "d"."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA"}
