"""Ed25519 signing and verification by key id."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from ehr.crypto.keys import FileKeyStore, MemoryKeyStore
from ehr.crypto.signing import Signer, verify_signature

KEYS = MemoryKeyStore(seed=b"signing-tests")
messages = st.binary(min_size=1, max_size=512)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(messages)
def test_a_signature_verifies_under_its_kid(message: bytes) -> None:
    signer = KEYS.signer()
    assert verify_signature(KEYS, signer.kid, message, signer.sign(message))


@given(messages, st.data())
def test_flipped_data_fails(message: bytes, data: st.DataObject) -> None:
    signer = KEYS.signer()
    bit = data.draw(st.integers(0, 8 * len(message) - 1))
    assert not verify_signature(KEYS, signer.kid, flip(message, bit), signer.sign(message))


@given(messages, st.integers(0, 8 * 64 - 1))
def test_flipped_signature_fails(message: bytes, bit: int) -> None:
    signer = KEYS.signer()
    assert not verify_signature(KEYS, signer.kid, message, flip(signer.sign(message), bit))


def test_unknown_kid_and_malformed_signatures_fail() -> None:
    signer = KEYS.signer()
    signature = signer.sign(b"data")
    for kid in ("sig-000099-00000000", "kek-000001-00000000", "", "nonsense"):
        assert not verify_signature(KEYS, kid, b"data", signature)
    for bad in (b"", signature[:-1], signature + b"\x00", b"\x00" * 64):
        assert not verify_signature(KEYS, signer.kid, b"data", bad)


def test_another_stores_key_does_not_verify() -> None:
    other = MemoryKeyStore(seed=b"someone else").signer()
    assert not verify_signature(KEYS, other.kid, b"data", other.sign(b"data"))


def test_old_signatures_verify_after_rotation(tmp_path: Path) -> None:
    keys = FileKeyStore.create(tmp_path / "keys")
    old = keys.signer()
    signature = old.sign(b"version 1")
    new_kid = keys.rotate_signing_key()
    assert keys.signer().kid == new_kid != old.kid
    assert verify_signature(keys, old.kid, b"version 1", signature)
    assert not verify_signature(keys, new_kid, b"version 1", signature)


def test_signer_repr_shows_only_the_kid() -> None:
    signer = KEYS.signer()
    assert repr(signer) == f"Signer(kid={signer.kid!r})"
    assert not hasattr(signer, "__dict__")


def test_jwks_holds_only_public_keys_matching_the_signers() -> None:
    keys = MemoryKeyStore(seed=b"jwks")
    first = keys.signer()
    keys.rotate_signing_key()
    second = keys.signer()
    jwks = keys.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [second.kid, first.kid]
    for jwk, signer in zip(jwks["keys"], (second, first), strict=True):
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}  # no "d"
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA")
        raw = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert base64.urlsafe_b64decode(jwk["x"] + "=") == raw


def test_signer_is_a_signer() -> None:
    assert isinstance(KEYS.signer(), Signer)
