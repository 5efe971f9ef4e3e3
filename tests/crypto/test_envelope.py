"""Envelope encryption: round trip, tamper evidence, AAD binding, rewrap; against both key stores."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ehr.crypto.envelope import NONCE_BYTES, WRAPPED_BYTES, DecryptionError, Sealed, open_sealed, rewrap, seal
from ehr.crypto.keys import FileKeyStore, KeyStore, MemoryKeyStore

AAD = b"Patient/123/_history/2"
plaintexts = st.binary(max_size=4096)
aads = st.binary(max_size=64)


@pytest.fixture(scope="module", params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyStore]:
    if request.param == "memory":
        yield MemoryKeyStore(seed=b"envelope-tests")
    else:
        yield FileKeyStore.create(tmp_path_factory.mktemp("keys") / "keys")


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@given(plaintext=plaintexts, aad=aads)
def test_seal_then_open_gives_the_plaintext_back(store: KeyStore, plaintext: bytes, aad: bytes) -> None:
    sealed = seal(store, plaintext, aad)
    assert open_sealed(store, sealed, aad) == plaintext
    assert sealed.kek_id == store.active_kek()[0]
    assert len(sealed.nonce) == NONCE_BYTES and len(sealed.wrapped_key) == WRAPPED_BYTES
    assert len(sealed.ciphertext) == len(plaintext) + 16


@given(plaintext=plaintexts, field=st.sampled_from(["wrapped_key", "nonce", "ciphertext"]), data=st.data())
def test_any_single_flipped_bit_fails(store: KeyStore, plaintext: bytes, field: str, data: st.DataObject) -> None:
    sealed = seal(store, plaintext, AAD)
    original: bytes = getattr(sealed, field)
    bit = data.draw(st.integers(0, 8 * len(original) - 1), label="bit")
    tampered = dataclasses.replace(sealed, **{field: flip(original, bit)})
    with pytest.raises(DecryptionError):
        open_sealed(store, tampered, AAD)


@given(plaintext=plaintexts, aad=aads, other=aads)
def test_a_different_aad_fails(store: KeyStore, plaintext: bytes, aad: bytes, other: bytes) -> None:
    assume(aad != other)
    sealed = seal(store, plaintext, aad)
    with pytest.raises(DecryptionError):
        open_sealed(store, sealed, other)
    with pytest.raises(DecryptionError):
        rewrap(store, sealed, other)


def test_parts_of_two_records_cannot_be_swapped(store: KeyStore) -> None:
    one, two = seal(store, b"one", AAD), seal(store, b"two", AAD)
    for mixed in (
        dataclasses.replace(one, wrapped_key=two.wrapped_key),
        dataclasses.replace(one, ciphertext=two.ciphertext),
    ):
        with pytest.raises(DecryptionError):
            open_sealed(store, mixed, AAD)


def test_truncated_or_oversized_fields_fail(store: KeyStore) -> None:
    sealed = seal(store, b"x" * 100, AAD)
    for field in ("wrapped_key", "nonce", "ciphertext"):
        value: bytes = getattr(sealed, field)
        for changed in (value[:-1], value + b"\x00", b""):
            with pytest.raises(DecryptionError):
                open_sealed(store, dataclasses.replace(sealed, **{field: changed}), AAD)


def test_seal_uses_a_fresh_data_key_and_nonce_each_time(store: KeyStore) -> None:
    a, b = seal(store, b"same", AAD), seal(store, b"same", AAD)
    assert a.wrapped_key != b.wrapped_key and a.nonce != b.nonce and a.ciphertext != b.ciphertext


def test_unknown_kek_fails() -> None:
    keys = MemoryKeyStore(seed=b"a")
    sealed = seal(keys, b"secret", AAD)
    with pytest.raises(DecryptionError):
        open_sealed(MemoryKeyStore(seed=b"b"), sealed, AAD)
    for kid in ("kek-000009-00000000", "", "../../etc/passwd", "\ud800"):
        with pytest.raises(DecryptionError):
            open_sealed(keys, dataclasses.replace(sealed, kek_id=kid), AAD)


def test_relabelling_to_another_existing_kek_fails() -> None:
    keys = MemoryKeyStore(seed=b"relabel")
    old_kid = keys.active_kek()[0]
    keys.rotate_kek()
    sealed = seal(keys, b"secret", AAD)
    with pytest.raises(DecryptionError):
        open_sealed(keys, dataclasses.replace(sealed, kek_id=old_kid), AAD)


@pytest.mark.parametrize("kind", ["memory", "file"])
def test_rewrap_after_rotation_uses_the_new_kek_and_keeps_the_ciphertext(kind: str, tmp_path: Path) -> None:
    keys: MemoryKeyStore | FileKeyStore = (
        MemoryKeyStore(seed=b"rewrap") if kind == "memory" else FileKeyStore.create(tmp_path / "keys")
    )
    old = seal(keys, b"clinical note", AAD)
    new_kid = keys.rotate_kek()
    moved = rewrap(keys, old, AAD)
    assert moved.kek_id == new_kid != old.kek_id
    assert (moved.nonce, moved.ciphertext) == (old.nonce, old.ciphertext)
    assert open_sealed(keys, moved, AAD) == b"clinical note"
    assert open_sealed(keys, old, AAD) == b"clinical note"  # old KEKs stay until every record moved


def test_decryption_error_says_nothing_useful_to_an_attacker(store: KeyStore) -> None:
    sealed = seal(store, b"SECRET-DIAGNOSIS", AAD)
    with pytest.raises(DecryptionError) as caught:
        open_sealed(store, sealed, b"Patient/999")
    assert str(caught.value) == "decryption failed"
    assert "SECRET" not in repr(caught.value)


def test_sealed_repr_does_not_show_the_plaintext(store: KeyStore) -> None:
    assert b"SECRET".hex() not in repr(seal(store, b"SECRET", AAD)) and "SECRET" not in repr(
        seal(store, b"SECRET", AAD)
    )


def test_sealed_is_immutable() -> None:
    sealed = seal(MemoryKeyStore(), b"x", AAD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sealed.kek_id = "other"  # type: ignore[misc]
    assert isinstance(sealed, Sealed)
