"""Development PKI: a local CA, a server certificate and a demo client certificate.

Real X.509 (RFC 5280) made with ``cryptography``, EC P-256 keys and ECDSA-SHA256
signatures. The private keys are written unencrypted: this is for development and
tests only; production certificates come from the operator's own CA.

The file names in :class:`DevPki` are a public contract (the CLI, the docs and the
deployment scripts refer to them).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=5 * 365)
# CA/Browser Forum baseline requirements cap TLS leaf certificates at 398 days.
LEAF_LIFETIME = timedelta(days=365)
MAX_LEAF_LIFETIME = timedelta(days=398)
# Back-date notBefore a little so that a peer whose clock lags still accepts a fresh cert.
CLOCK_SKEW = timedelta(minutes=5)

DEV_CA_NAME = "EHR Development CA"
DEV_CLIENT_NAME = "demo-client"

_KEY_MODE = 0o600
_CERT_MODE = 0o644
_DIR_MODE = 0o700


@dataclass(frozen=True)
class DevPki:
    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def at(cls, directory: Path) -> DevPki:
        return cls(
            directory=directory,
            ca_cert=directory / "ca.pem",
            ca_key=directory / "ca-key.pem",
            server_cert=directory / "server.pem",
            server_key=directory / "server-key.pem",
            client_cert=directory / "client.pem",
            client_key=directory / "client-key.pem",
        )


def ensure_dev_pki(pki_dir: Path, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> DevPki:
    """Create whatever part of the development PKI is missing; never overwrite a file.

    A half-written pair (a certificate without its key, or the reverse) and leaf
    certificates without their CA are refused rather than repaired, since any repair
    would have to replace or orphan an existing file.
    """
    if not hosts:
        raise ValueError("the server certificate needs at least one host name or address")
    pki = DevPki.at(pki_dir)
    _make_private_dir(pki_dir)
    leaves = (pki.server_cert, pki.server_key, pki.client_cert, pki.client_key)
    if not _pair_exists(pki.ca_cert, pki.ca_key):
        if any(path.exists() for path in leaves):
            raise FileExistsError(f"{pki_dir}: leaf certificates exist but the CA does not")
        create_ca(pki.ca_cert, pki.ca_key, DEV_CA_NAME)
    if not _pair_exists(pki.server_cert, pki.server_key):
        issue_certificate(
            pki.ca_cert,
            pki.ca_key,
            hosts[0],
            pki.server_cert,
            pki.server_key,
            client=False,
            hosts=hosts,
        )
    if not _pair_exists(pki.client_cert, pki.client_key):
        issue_certificate(pki.ca_cert, pki.ca_key, DEV_CLIENT_NAME, pki.client_cert, pki.client_key)
    return pki


def create_ca(cert_out: Path, key_out: Path, common_name: str) -> None:
    """A self-signed CA that may issue end-entity certificates only (pathLenConstraint 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    not_before = datetime.now(UTC) - CLOCK_SKEW
    builder = (
        _base_builder(name, name, key.public_key(), not_before, not_before + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
            critical=False,
        )
    )
    _write_pair(builder.sign(key, hashes.SHA256()), key, cert_out, key_out)


def issue_certificate(
    ca_cert: Path,
    ca_key: Path,
    common_name: str,
    cert_out: Path,
    key_out: Path,
    *,
    client: bool = True,
    hosts: Sequence[str] = (),
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> None:
    """Issue an end-entity certificate for a TLS client (default) or a TLS server.

    ``hosts`` become subjectAltName entries (DNS names or IP addresses); a server
    certificate needs at least one, since clients ignore the CN (RFC 6125 §6.4.4).
    """
    if not client and not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = _load_ca_key(ca_key)
    start, end = _leaf_validity(issuer, not_before, not_after)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _base_builder(_name(common_name), issuer.subject, key.public_key(), start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
    _write_pair(builder.sign(signer, hashes.SHA256()), key, cert_out, key_out)


def certificate_thumbprint(cert: bytes | str) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url, unpadded, of SHA-256 over the DER certificate."""
    digest = hashlib.sha256(_der(cert)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _der(cert: bytes | str) -> bytes:
    data = cert.encode("ascii") if isinstance(cert, str) else cert
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    # Parse to reject garbage: a thumbprint of something that is not a certificate is a bug.
    return x509.load_der_x509_certificate(data).public_bytes(serialization.Encoding.DER)


def _leaf_validity(
    issuer: x509.Certificate, not_before: datetime | None, not_after: datetime | None
) -> tuple[datetime, datetime]:
    start = not_before if not_before is not None else datetime.now(UTC) - CLOCK_SKEW
    if not_after is None:
        end = min(start + LEAF_LIFETIME, issuer.not_valid_after_utc)
    else:
        end = not_after
    if end <= start:
        raise ValueError("not_after must be later than not_before")
    if end - start > MAX_LEAF_LIFETIME:
        raise ValueError("a leaf certificate may be valid for at most 398 days")
    if end > issuer.not_valid_after_utc:
        raise ValueError("a leaf certificate may not outlive its CA")
    return start, end


def _base_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _load_ca_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: expected an EC private key")
    return key


def _pair_exists(cert: Path, key: Path) -> bool:
    if cert.exists() != key.exists():
        raise FileExistsError(f"{cert} and {key}: only one of the pair exists; refusing to replace it")
    return cert.exists()


def _make_private_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=_DIR_MODE, parents=True)
        directory.chmod(_DIR_MODE)


def _write_pair(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    cert_out: Path,
    key_out: Path,
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path in (cert_out, key_out):
        if path.exists():
            raise FileExistsError(f"{path} exists; refusing to overwrite it")
    # The key first: a crash in between leaves a key without a certificate, never the reverse.
    _write_new(key_out, key_pem, _KEY_MODE)
    try:
        _write_new(cert_out, cert.public_bytes(serialization.Encoding.PEM), _CERT_MODE)
    except BaseException:
        key_out.unlink()
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start; O_EXCL fails rather than overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
