"""Key stores: file layout and permissions, idempotent create, rotation, reload, the memory twin."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ehr.crypto.keys import FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore, UnknownKey


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "home" / "keys"


def test_create_makes_a_private_directory_with_one_key_of_each_kind(key_dir: Path) -> None:
    keys = FileKeyStore.create(key_dir)
    assert mode(key_dir) == 0o700
    files = sorted(key_dir.iterdir())
    assert [f.name.split("-")[0] for f in files] == ["idx", "kek", "sig"]
    for f in files:
        assert mode(f) == 0o600 and f.stat().st_size == 32
    assert keys.index_key() == files[0].read_bytes()
    assert keys.active_kek()[0] + ".key" == files[1].name
    assert keys.signer().kid + ".key" == files[2].name


def test_a_key_directory_without_an_index_key_is_refused_with_the_fix(key_dir: Path) -> None:
    FileKeyStore.create(key_dir)
    next(key_dir.glob("idx-*.key")).unlink()
    with pytest.raises(KeyStoreError, match="search index key.*ehr init"):
        FileKeyStore(key_dir)


def test_create_twice_never_changes_keys(key_dir: Path) -> None:
    FileKeyStore.create(key_dir)
    before = snapshot(key_dir)
    again = FileKeyStore.create(key_dir)
    assert snapshot(key_dir) == before
    assert again.active_kek()[1] in before.values()


def test_create_keeps_rotated_keys_and_adds_nothing(key_dir: Path) -> None:
    FileKeyStore.create(key_dir).rotate_kek()
    before = snapshot(key_dir)
    FileKeyStore.create(key_dir)
    assert snapshot(key_dir) == before


def test_missing_directory_is_a_clear_error(key_dir: Path) -> None:
    with pytest.raises(KeyStoreError, match="does not exist"):
        FileKeyStore(key_dir)


def test_empty_directory_is_a_clear_error(key_dir: Path) -> None:
    key_dir.mkdir(mode=0o700, parents=True)
    with pytest.raises(KeyStoreError, match="no key-encryption key"):
        FileKeyStore(key_dir)


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_key_file_open_to_group_or_world_is_refused(key_dir: Path, bad_mode: int) -> None:
    FileKeyStore.create(key_dir)
    victim = next(key_dir.iterdir())
    victim.chmod(bad_mode)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        FileKeyStore(key_dir)


def test_a_directory_open_to_others_is_refused_and_create_does_not_write_into_it(key_dir: Path) -> None:
    key_dir.mkdir(parents=True)
    key_dir.chmod(0o755)
    with pytest.raises(KeyStoreError, match="chmod 700"):
        FileKeyStore.create(key_dir)
    assert list(key_dir.iterdir()) == []


def test_a_symlinked_or_short_key_file_is_refused(key_dir: Path, tmp_path: Path) -> None:
    keys = FileKeyStore.create(key_dir)
    kek_file = key_dir / (keys.active_kek()[0] + ".key")
    outside = tmp_path / "elsewhere"
    outside.write_bytes(kek_file.read_bytes())
    outside.chmod(0o600)
    kek_file.unlink()
    kek_file.symlink_to(outside)
    with pytest.raises(KeyStoreError, match="cannot open"):
        FileKeyStore(key_dir)
    kek_file.unlink()
    fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"short")
    os.close(fd)
    with pytest.raises(KeyStoreError, match="exactly 32 bytes"):
        FileKeyStore(key_dir)


def test_rotate_kek_adds_a_new_active_key_and_keeps_the_old(key_dir: Path) -> None:
    keys = FileKeyStore.create(key_dir)
    old_kid, old_kek = keys.active_kek()
    new_kid = keys.rotate_kek()
    assert new_kid != old_kid and keys.active_kek()[0] == new_kid
    assert keys.kek(old_kid) == old_kek and keys.kek(new_kid) != old_kek
    assert mode(key_dir / (new_kid + ".key")) == 0o600
    assert not [p for p in key_dir.iterdir() if p.name.startswith(".")]  # no temp files left


def test_a_second_instance_sees_a_rotation_made_by_the_first(key_dir: Path) -> None:
    first = FileKeyStore.create(key_dir)
    second = FileKeyStore(key_dir)
    kek_kid, sig_kid = first.rotate_kek(), first.rotate_signing_key()
    assert second.kek(kek_kid) == first.kek(kek_kid)  # unknown kid: re-read once
    assert second.verification_key(sig_kid) is not None
    assert second.active_kek()[0] == kek_kid and second.signer().kid == sig_kid


def test_an_old_directory_is_reread_when_it_changes(key_dir: Path) -> None:
    first = FileKeyStore.create(key_dir)
    long_ago = 1_000_000_000
    os.utime(key_dir, (long_ago, long_ago))
    second = FileKeyStore(key_dir)
    second.CHECK_INTERVAL_S = 0.0  # look at the directory on every call
    assert second.active_kek() == first.active_kek()
    kid = first.rotate_kek()
    assert second.active_kek()[0] == kid


def test_the_directory_is_looked_at_once_per_interval(key_dir: Path) -> None:
    first = FileKeyStore.create(key_dir)
    os.utime(key_dir, (1_000_000_000, 1_000_000_000))
    second = FileKeyStore(key_dir)
    old = second.active_kek()
    first.rotate_kek()
    assert second.active_kek() == old  # within the interval: the snapshot, no stat


def test_unknown_kid_raises_unknown_key_which_is_a_key_error(key_dir: Path) -> None:
    for keys in (FileKeyStore.create(key_dir), MemoryKeyStore()):
        for kid in ("kek-000042-00000000", "sig-000001-deadbeef", "whatever"):
            with pytest.raises(UnknownKey):
                keys.kek(kid)
            with pytest.raises(KeyError):
                keys.verification_key(kid)


def test_kek_ids_and_signing_ids_are_separate(key_dir: Path) -> None:
    keys = FileKeyStore.create(key_dir)
    with pytest.raises(UnknownKey):
        keys.kek(keys.signer().kid)
    with pytest.raises(UnknownKey):
        keys.verification_key(keys.active_kek()[0])


def test_memory_store_is_deterministic_from_its_seed() -> None:
    a, b, c = MemoryKeyStore(seed=b"s"), MemoryKeyStore(seed=b"s"), MemoryKeyStore(seed=b"t")
    assert a.active_kek() == b.active_kek() != c.active_kek()
    assert a.signer().sign(b"m") == b.signer().sign(b"m") != c.signer().sign(b"m")
    assert a.rotate_kek() == b.rotate_kek()
    assert a.active_kek() == b.active_kek() and len(a.active_kek()[1]) == 32


def test_memory_store_rotation_keeps_old_keys() -> None:
    keys = MemoryKeyStore()
    old_kid, old_kek = keys.active_kek()
    old_sig = keys.signer().kid
    assert keys.rotate_kek() == keys.active_kek()[0] != old_kid
    assert keys.rotate_signing_key() == keys.signer().kid != old_sig
    assert keys.kek(old_kid) == old_kek and keys.verification_key(old_sig) is not None


def test_both_stores_implement_the_protocol(key_dir: Path) -> None:
    assert isinstance(MemoryKeyStore(), KeyStore)
    assert isinstance(FileKeyStore.create(key_dir), KeyStore)


def test_reprs_show_key_ids_only(key_dir: Path) -> None:
    for keys in (FileKeyStore.create(key_dir), MemoryKeyStore(seed=b"repr")):
        kid, kek = keys.active_kek()
        text = repr(keys)
        assert kid in text and keys.signer().kid in text
        assert kek.hex() not in text and repr(kek) not in text and "seed" not in text
