"""A real uvicorn server with EhrServerConfig, real certificates and real TLS clients.

Refusals show up as the server closing the connection: asyncio (and uvloop) abort the
transport on a failed handshake without flushing OpenSSL's alert (CPython gh-98078), so
clients see EOF rather than a named alert; a fixed runtime would send the alert, which
is accepted too. Each refusal has a positive control that differs only in the
one property under test, and the app must not have seen any request.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ehr.pki import DevPki, certificate_thumbprint, create_ca, ensure_dev_pki, issue_certificate
from ehr.tls import EhrServerConfig, peer_certificate_pem

TLS12_AEAD_SUITES = {0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8}
TLS13_SUITES = {0x1301, 0x1302, 0x1303}
REQUEST = b"GET /probe HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
# What a client sees when the server drops the connection during or right after the handshake.
EOF_REASONS = {"UNEXPECTED_EOF_WHILE_READING", "EOF"}


@dataclass
class ProbeApp:
    """Answers with what the app learns about the peer; remembers every request it saw."""

    seen: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        pem = peer_certificate_pem(scope)
        thumbprint = certificate_thumbprint(pem) if pem else None
        self.seen.append(thumbprint)
        tls = scope["extensions"]["tls"]
        body = {
            "thumbprint": thumbprint,
            "subject": tls["client_cert_name"],
            "tls_version": tls["tls_version"],
            "cipher_suite": tls["cipher_suite"],
            "client_port": scope["client"][1],
        }
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@dataclass(frozen=True)
class RunningServer:
    port: int
    app: ProbeApp
    pki: DevPki
    extra: Path  # certificates made for individual tests

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}/probe"


def _loops() -> list[str]:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return ["asyncio"]
    return ["asyncio", "uvloop"]


@pytest.fixture(scope="module", params=_loops())
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    pki = ensure_dev_pki(tmp_path_factory.mktemp("pki") / "dev")
    app = ProbeApp()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = EhrServerConfig(
        app,
        host="127.0.0.1",
        port=sock.getsockname()[1],
        certfile=pki.server_cert,
        keyfile=pki.server_key,
        client_ca=pki.ca_cert,
        loop=request.param,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        _wait_started(uv, thread)
        yield RunningServer(sock.getsockname()[1], app, pki, tmp_path_factory.mktemp("extra"))
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


def _wait_started(uv: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 10
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)


def client_context(pki: DevPki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_cert)
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def demo_client(pki: DevPki) -> tuple[Path, Path]:
    return pki.client_cert, pki.client_key


def get_json(server: RunningServer, context: ssl.SSLContext) -> dict[str, Any]:
    with httpx.Client(verify=context) as client:
        response = client.get(server.url)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@dataclass(frozen=True)
class Exchange:
    version: str | None = None
    response: bytes = b""
    error: str | None = None


def exchange(port: int, context: ssl.SSLContext, host: str = "localhost") -> Exchange:
    """One request over the stdlib ssl module: what the client got, or why it failed."""
    version = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                version = tls.version()
                tls.sendall(REQUEST)
                return Exchange(version, _read_all(tls))
    except ssl.SSLError as exc:
        return Exchange(version, error=str(exc.reason))
    except (ConnectionResetError, BrokenPipeError):
        return Exchange(version, error="EOF")


def _read_all(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    return data


def is_refusal(reason: str | None) -> bool:
    """EOF from the server, or a fatal alert it sent (e.g. TLSV1_ALERT_PROTOCOL_VERSION)."""
    return reason is not None and (reason in EOF_REASONS or "ALERT" in reason)


def assert_refused(server: RunningServer, result: Exchange, seen_before: int) -> None:
    assert result.response == b"", "the server answered a connection it should have refused"
    if result.error is not None:
        assert is_refusal(result.error), result.error
    assert len(server.app.seen) == seen_before, "a refused connection reached the app"


def issue(server: RunningServer, name: str, ca: tuple[Path, Path] | None = None, **kwargs: Any) -> tuple[Path, Path]:
    ca_cert, ca_key = ca or (server.pki.ca_cert, server.pki.ca_key)
    cert, key = server.extra / f"{name}.pem", server.extra / f"{name}-key.pem"
    issue_certificate(ca_cert, ca_key, name, cert, key, **kwargs)
    return cert, key


def max_version(context: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    context.maximum_version = version
    return context


# -- what the application sees ----------------------------------------------------------


def test_valid_client_certificate_reaches_the_app_with_its_thumbprint(server: RunningServer) -> None:
    body = get_json(server, client_context(server.pki, demo_client(server.pki)))

    assert body["thumbprint"] == certificate_thumbprint(server.pki.client_cert.read_bytes())
    assert body["subject"] == "CN=demo-client"


def test_client_without_certificate_connects_and_the_app_sees_none(server: RunningServer) -> None:
    body = get_json(server, client_context(server.pki))

    assert body["thumbprint"] is None
    assert body["subject"] is None


def test_each_connection_sees_its_own_certificate(server: RunningServer) -> None:
    other = issue(server, "second-client")
    with_demo = client_context(server.pki, demo_client(server.pki))
    with_other = client_context(server.pki, other)

    thumbprints = [get_json(server, ctx)["thumbprint"] for ctx in (with_demo, with_other, with_demo)]

    demo, second = (certificate_thumbprint(p.read_bytes()) for p in (server.pki.client_cert, other[0]))
    assert thumbprints == [demo, second, demo]


def test_every_request_on_a_kept_alive_connection_sees_the_certificate(server: RunningServer) -> None:
    context = client_context(server.pki, demo_client(server.pki))
    with httpx.Client(verify=context) as client:
        bodies = [client.get(server.url).json() for _ in range(3)]

    expected = certificate_thumbprint(server.pki.client_cert.read_bytes())
    assert len({b["client_port"] for b in bodies}) == 1, "expected one kept-alive connection"
    assert [b["thumbprint"] for b in bodies] == [expected] * 3


# -- refused client certificates --------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_certificate_from_another_ca_is_refused(server: RunningServer, version: ssl.TLSVersion) -> None:
    ca = server.extra / f"other-ca-{version.name}.pem", server.extra / f"other-ca-{version.name}-key.pem"
    create_ca(*ca, "Some Other CA")
    stranger = issue(server, f"stranger-{version.name}", ca=ca)
    seen = len(server.app.seen)

    result = exchange(server.port, max_version(client_context(server.pki, stranger), version))

    assert_refused(server, result, seen)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_expired_certificate_from_the_right_ca_is_refused(server: RunningServer, version: ssl.TLSVersion) -> None:
    now = datetime.now(UTC)
    expired = issue(
        server, f"expired-{version.name}", not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    seen = len(server.app.seen)

    result = exchange(server.port, max_version(client_context(server.pki, expired), version))

    assert_refused(server, result, seen)


def test_server_certificate_cannot_act_as_a_client_certificate(server: RunningServer) -> None:
    # Same CA, in date, but its EKU says serverAuth only.
    seen = len(server.app.seen)
    context = client_context(server.pki, (server.pki.server_cert, server.pki.server_key))

    assert_refused(server, exchange(server.port, context), seen)


def test_refusals_are_for_the_certificate_not_the_client_setup(server: RunningServer) -> None:
    """Positive control: the same stdlib client with the demo certificate is answered."""
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = max_version(client_context(server.pki, demo_client(server.pki)), version)
        result = exchange(server.port, context)
        assert result.error is None
        assert result.response.startswith(b"HTTP/1.1 200 ")


# -- protocol versions and cipher suites ------------------------------------------------


def legacy_client(pki: DevPki, highest: ssl.TLSVersion) -> ssl.SSLContext:
    """A client willing to speak TLS 1.0 up to ``highest``; SECLEVEL=0 lets OpenSSL 3 try."""
    context = client_context(pki, demo_client(pki))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl deprecates TLS 1.0/1.1 settings
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = highest
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_tls_1_1_client_is_refused(server: RunningServer) -> None:
    seen = len(server.app.seen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = legacy_client(server.pki, ssl.TLSVersion.TLSv1_1)

    result = exchange(server.port, context)

    assert is_refusal(result.error), result.error
    assert_refused(server, result, seen)


def test_legacy_capable_client_is_held_to_tls_1_2(server: RunningServer) -> None:
    result = exchange(server.port, legacy_client(server.pki, ssl.TLSVersion.TLSv1_2))

    assert result.version == "TLSv1.2"
    assert result.response.startswith(b"HTTP/1.1 200 ")


def test_tls_1_2_client_offering_only_cbc_suites_is_refused(server: RunningServer) -> None:
    # Suites the server's ECDSA key could serve, but with CBC + HMAC instead of an AEAD.
    context = max_version(client_context(server.pki, demo_client(server.pki)), ssl.TLSVersion.TLSv1_2)
    context.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256")
    seen = len(server.app.seen)

    result = exchange(server.port, context)

    assert is_refusal(result.error), result.error
    assert_refused(server, result, seen)


def test_tls_1_2_negotiates_an_ecdhe_aead_suite(server: RunningServer) -> None:
    context = max_version(client_context(server.pki, demo_client(server.pki)), ssl.TLSVersion.TLSv1_2)

    body = get_json(server, context)

    assert body["tls_version"] == 0x0303
    assert body["cipher_suite"] in TLS12_AEAD_SUITES


def test_tls_1_3_is_negotiated_when_the_client_offers_it(server: RunningServer) -> None:
    context = client_context(server.pki, demo_client(server.pki))

    result = exchange(server.port, context)
    body = get_json(server, context)

    assert result.version == "TLSv1.3"
    assert body["tls_version"] == 0x0304
    assert body["cipher_suite"] in TLS13_SUITES


# -- the server certificate -------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_server_certificate_verifies_for_the_dev_hosts(server: RunningServer, host: str) -> None:
    result = exchange(server.port, client_context(server.pki), host=host)

    assert result.error is None
    assert result.response.startswith(b"HTTP/1.1 200 ")


def test_server_certificate_does_not_verify_for_other_hosts(server: RunningServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            client_context(server.pki).wrap_socket(raw, server_hostname="ehr.example.org").close()


# -- an independent client --------------------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl binary")
def test_openssl_s_client_with_tls_1_1_is_refused(server: RunningServer) -> None:
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost"]

    refused = subprocess.run(
        [*command, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], input=b"", capture_output=True, timeout=30
    )
    accepted = subprocess.run(
        [*command, "-tls1_2", "-CAfile", str(server.pki.ca_cert)], input=b"", capture_output=True, timeout=30
    )

    assert refused.returncode != 0
    assert b"Cipher is (NONE)" in refused.stdout
    assert accepted.returncode == 0
    assert b"Verify return code: 0 (ok)" in accepted.stdout
