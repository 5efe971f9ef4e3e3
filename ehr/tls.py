"""TLS policy for the HTTP listener and the verified client certificate in the ASGI scope.

uvicorn terminates TLS but does not tell the application who the peer is. This module
adds the ASGI TLS extension (https://asgi.readthedocs.io/en/latest/specs/tls.html) to
every HTTP scope on a TLS connection, so that RFC 8705 certificate-bound tokens and the
audit trail can rely on the certificate that the handshake verified. See
docs/adr/0003-tls-and-client-certificates.md.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from uvicorn._types import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGISendCallable,
        Scope,
    )

# RFC 9325 §4.1-4.2: TLS 1.2 suites with forward secrecy (ephemeral ECDH) and AEAD only;
# the four §4.2 RECOMMENDED AES-GCM suites, then ChaCha20-Poly1305 (RFC 7905) for
# clients without AES hardware. No static RSA or finite-field DH key exchange, no CBC.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)

# Wire values of ProtocolVersion (RFC 5246 §A.1, RFC 8446 §4.2.1), as the ASGI spec asks.
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}

# Settings that would bypass server_ssl_context() or the TLS-aware protocol class.
_FIXED_SETTINGS = frozenset(
    {
        "http",
        "http2",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_keyfile_password",
        "ssl_version",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ciphers",
        "ssl_context_factory",
    }
)


def server_ssl_context(certfile: Path, keyfile: Path, client_ca: Path) -> ssl.SSLContext:
    """The listener's TLS policy, after RFC 9325 (BCP 195)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # §3.1.1: MUST NOT negotiate TLS 1.0/1.1 (RFC 8996); MUST support TLS 1.2;
    # SHOULD support TLS 1.3 and prefer it (OpenSSL picks the highest shared version).
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    # §4.1-4.2: forward secrecy and AEAD. This governs TLS 1.2 only; every TLS 1.3
    # suite (RFC 8446 §9.1) is already AEAD with (EC)DHE.
    context.set_ciphers(TLS12_CIPHERS)
    # §3.3: no TLS-level compression (CRIME). §3.5: renegotiation is not needed by any
    # client here and is a DoS and triple-handshake surface, so refuse it outright.
    # §4.2.1: the server chooses the suite. §3.4: OpenSSL never rotates its ticket key,
    # so stateless TLS 1.2 tickets would undermine forward secrecy; use the session cache.
    context.options |= (
        ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    )
    # §3.8: support ALPN; this listener speaks HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(certfile, keyfile)
    _require_valid_client_certificates(context, client_ca)
    return context


def _require_valid_client_certificates(context: ssl.SSLContext, client_ca: Path) -> None:
    # CERT_OPTIONAL: the server asks for a certificate but admits clients without one
    # (the public /metadata, OAuth bearer clients). A certificate that IS presented must
    # chain to client_ca, be in date and carry clientAuth if it has an EKU, or OpenSSL
    # aborts the handshake. RFC 5280 strict checks, as Python 3.13 does for clients.
    context.load_verify_locations(cafile=client_ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_STRICT


@dataclass(frozen=True)
class PeerTLS:
    """What one TLS connection tells the application; read once, when it is made."""

    client_cert_pem: str | None
    client_cert_name: str | None
    tls_version: int | None
    cipher_suite: int | None

    @classmethod
    def from_ssl_object(cls, ssl_object: ssl.SSLObject) -> PeerTLS:
        # With CERT_OPTIONAL a certificate that failed verification ends the handshake,
        # so a certificate that reaches this point is a verified one.
        der = ssl_object.getpeercert(binary_form=True)
        cipher = ssl_object.cipher()
        return cls(
            client_cert_pem=ssl.DER_cert_to_PEM_cert(der) if der else None,
            client_cert_name=_subject_name(der) if der else None,
            tls_version=_TLS_VERSIONS.get(ssl_object.version() or ""),
            cipher_suite=_cipher_suite_id(ssl_object.context, cipher[0]) if cipher else None,
        )

    def extension(self) -> dict[object, object]:
        """A fresh ``scope["extensions"]["tls"]`` value, so no request can alter the next."""
        return {
            "server_cert": None,
            "client_cert_chain": [self.client_cert_pem] if self.client_cert_pem else [],
            "client_cert_name": self.client_cert_name,
            "client_cert_error": None,
            "tls_version": self.tls_version,
            "cipher_suite": self.cipher_suite,
        }


def _subject_name(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def _cipher_suite_id(context: ssl.SSLContext, name: str) -> int | None:
    # OpenSSL ids are 0x0300XXXX; the low 16 bits are the IANA TLS cipher suite value.
    return next((c["id"] & 0xFFFF for c in context.get_ciphers() if c["name"] == name), None)


class _WithTLSExtension:
    """ASGI middleware for one connection: adds the TLS extension to each HTTP scope."""

    def __init__(self, app: ASGI3Application, peer: PeerTLS) -> None:
        self._app = app
        self._peer = peer

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http":
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = self._peer.extension()
            scope = {**scope, "extensions": extensions}
        await self._app(scope, receive, send)


class TLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ASGI TLS extension in every HTTP scope.

    asyncio (and uvloop) call ``connection_made`` only once the handshake has completed,
    so the peer certificate is known here; the wrapped app serves every request of this
    connection, pipelined ones included.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.app = _WithTLSExtension(self.app, PeerTLS.from_ssl_object(ssl_object))

    def shutdown(self) -> None:
        """At server shutdown an idle keep-alive connection is dropped at once. A TLS close waits up
        to 30 s for the peer's close_notify, which an idle client does not send until it next uses
        the connection, and the server waited for that before writing its stop event. Nothing is in
        flight on an idle connection, so nothing is lost; a busy one finishes its response first."""
        if self.cycle is None or self.cycle.response_complete:
            self.transport.abort()
        else:
            self.cycle.keep_alive = False


@dataclass(frozen=True)
class _ServerContextFactory:
    """Picklable, so the config survives the spawn into uvicorn's worker processes."""

    certfile: Path
    keyfile: Path
    client_ca: Path

    def __call__(self, config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return server_ssl_context(self.certfile, self.keyfile, self.client_ca)


class EhrServerConfig(uvicorn.Config):
    """A uvicorn config that always serves TLS with this module's policy and protocol.

    ``load()`` (run in each worker) installs :func:`server_ssl_context` as ``self.ssl``
    through uvicorn's ``ssl_context_factory`` hook. Forwarded headers are ignored unless
    ``proxy_headers=True`` is passed: clients reach this server directly.
    """

    def __init__(
        self,
        app: Callable[..., Any] | str,
        *,
        host: str,
        port: int,
        certfile: Path,
        keyfile: Path,
        client_ca: Path,
        **kwargs: Any,
    ) -> None:
        fixed = _FIXED_SETTINGS.intersection(kwargs)
        if fixed:
            raise TypeError(f"EhrServerConfig sets these itself: {', '.join(sorted(fixed))}")
        kwargs.setdefault("proxy_headers", False)
        super().__init__(
            app,
            host=host,
            port=port,
            http=TLSHttpToolsProtocol,
            ssl_context_factory=_ServerContextFactory(certfile, keyfile, client_ca),
            **kwargs,
        )


def peer_certificate_pem(scope: Mapping[str, Any]) -> str | None:
    """The verified client certificate (PEM) of this request's connection, or None."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, Mapping) or tls.get("client_cert_error") is not None:
        return None
    chain = tls.get("client_cert_chain") or []
    leaf = chain[0] if chain else None
    return leaf if isinstance(leaf, str) else None
