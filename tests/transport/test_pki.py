"""The development PKI: files, permissions, certificate contents and the RFC 8705 thumbprint."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import given
from hypothesis import strategies as st

from ehr.pki import DevPki, certificate_thumbprint, ensure_dev_pki, issue_certificate

PUBLIC_FILES = ("ca.pem", "server.pem", "client.pem")
KEY_FILES = ("ca-key.pem", "server-key.pem", "client-key.pem")


@pytest.fixture
def dev_pki(tmp_path: Path) -> DevPki:
    return ensure_dev_pki(tmp_path / "pki")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.iterdir())}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_creates_the_contracted_file_names(dev_pki: DevPki) -> None:
    assert sorted(p.name for p in dev_pki.directory.iterdir()) == sorted(PUBLIC_FILES + KEY_FILES)
    assert dev_pki.ca_cert.name == "ca.pem" and dev_pki.client_key.name == "client-key.pem"


def test_second_call_changes_no_file(dev_pki: DevPki) -> None:
    before = snapshot(dev_pki.directory)

    again = ensure_dev_pki(dev_pki.directory)

    assert again == dev_pki
    assert snapshot(dev_pki.directory) == before


def test_private_keys_are_owner_only_and_directory_is_private(dev_pki: DevPki) -> None:
    assert mode(dev_pki.directory) == 0o700
    assert {name: mode(dev_pki.directory / name) for name in KEY_FILES} == dict.fromkeys(KEY_FILES, 0o600)


def test_private_keys_are_unencrypted_pem(dev_pki: DevPki) -> None:
    for name in KEY_FILES:
        assert (dev_pki.directory / name).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_ca_may_sign_only_end_entity_certificates(dev_pki: DevPki) -> None:
    ca = load(dev_pki.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value

    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert usage.key_cert_sign
    assert timedelta(days=5 * 365) <= ca.not_valid_after_utc - ca.not_valid_before_utc < timedelta(days=5 * 366)


def test_server_certificate_names_the_dev_hosts_for_server_auth(dev_pki: DevPki) -> None:
    cert = load(dev_pki.server_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_certificate_is_demo_client_for_client_auth(dev_pki: DevPki) -> None:
    cert = load(dev_pki.client_cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value

    assert cert.subject.rfc4514_string() == "CN=demo-client"
    assert cert.issuer == load(dev_pki.ca_cert).subject
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_leaf_certificates_last_a_year_within_the_398_day_cap(dev_pki: DevPki) -> None:
    for path in (dev_pki.server_cert, dev_pki.client_cert):
        cert = load(path)
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert timedelta(days=365) <= lifetime <= timedelta(days=398)
        assert cert.not_valid_before_utc <= datetime.now(UTC)


def test_missing_leaf_pair_is_issued_and_nothing_else_changes(dev_pki: DevPki) -> None:
    before = snapshot(dev_pki.directory)
    dev_pki.client_cert.unlink()
    dev_pki.client_key.unlink()

    ensure_dev_pki(dev_pki.directory)

    after = snapshot(dev_pki.directory)
    assert after["client.pem"] != before["client.pem"]
    assert {k: v for k, v in after.items() if not k.startswith("client")} == {
        k: v for k, v in before.items() if not k.startswith("client")
    }


def test_half_a_pair_is_refused_not_replaced(dev_pki: DevPki) -> None:
    key_before = dev_pki.client_key.read_bytes()
    dev_pki.client_cert.unlink()

    with pytest.raises(FileExistsError):
        ensure_dev_pki(dev_pki.directory)

    assert dev_pki.client_key.read_bytes() == key_before
    assert not dev_pki.client_cert.exists()


def test_leaves_without_their_ca_are_refused(dev_pki: DevPki) -> None:
    dev_pki.ca_cert.unlink()
    dev_pki.ca_key.unlink()

    with pytest.raises(FileExistsError):
        ensure_dev_pki(dev_pki.directory)

    assert not dev_pki.ca_cert.exists()


def test_issue_certificate_never_overwrites(dev_pki: DevPki) -> None:
    with pytest.raises(FileExistsError):
        issue_certificate(dev_pki.ca_cert, dev_pki.ca_key, "x", dev_pki.client_cert, dev_pki.directory / "new-key.pem")

    assert not (dev_pki.directory / "new-key.pem").exists()


@pytest.mark.parametrize("days", [399, 5 * 365])
def test_leaf_lifetime_is_capped_at_398_days(dev_pki: DevPki, tmp_path: Path, days: int) -> None:
    start = datetime.now(UTC)
    with pytest.raises(ValueError, match="398"):
        issue_certificate(
            dev_pki.ca_cert,
            dev_pki.ca_key,
            "too-long",
            tmp_path / "c.pem",
            tmp_path / "k.pem",
            not_before=start,
            not_after=start + timedelta(days=days),
        )
    assert not (tmp_path / "k.pem").exists()


def test_server_certificate_needs_a_host(dev_pki: DevPki, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="host"):
        issue_certificate(dev_pki.ca_cert, dev_pki.ca_key, "s", tmp_path / "s.pem", tmp_path / "k.pem", client=False)


# -- RFC 8705 x5t#S256 ------------------------------------------------------------------


def independent_thumbprint(pem: str) -> str:
    """Computed with the stdlib only: DER from ssl, SHA-256 from hashlib."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def test_thumbprint_matches_an_independent_computation(dev_pki: DevPki) -> None:
    pem = dev_pki.client_cert.read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)

    expected = independent_thumbprint(pem)

    assert certificate_thumbprint(pem) == expected
    assert certificate_thumbprint(pem.encode()) == expected
    assert certificate_thumbprint(der) == expected
    assert len(expected) == 43 and "=" not in expected


def test_thumbprints_differ_between_certificates(dev_pki: DevPki) -> None:
    prints = {
        certificate_thumbprint(p.read_bytes()) for p in (dev_pki.ca_cert, dev_pki.server_cert, dev_pki.client_cert)
    }
    assert len(prints) == 3


@given(st.binary(max_size=512) | st.text(max_size=512).map(lambda s: "-----BEGIN CERTIFICATE-----\n" + s))
def test_thumbprint_of_anything_but_a_certificate_is_an_error(data: bytes | str) -> None:
    with pytest.raises(ValueError):
        certificate_thumbprint(data)
