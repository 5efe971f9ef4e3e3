"""Who may connect: mutual TLS 1.2+ only, checked with Python, OpenSSL and python-hl7 clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from ehr.pki import DevPki, create_ca, issue_certificate
from interfaces.mllp.connection import Limits, Peer
from interfaces.mllp.framing import encode
from interfaces.mllp.server import MllpServer, ssl_context

WAIT = 10.0
MESSAGE = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20260101120000||ADT^A01^ADT_A01|MSG00042|P|2.5.1\rPID|1||12345^^^HOSP^MR\r"


class Recorder:
    """Answers each HL7 message with a minimal ACK naming its control id (MSH-10)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def __call__(self, payload: bytes, peer: Peer) -> list[bytes]:
        self.payloads.append(payload)
        control_id = payload.split(b"\r", 1)[0].split(b"|")[9]
        return [b"MSH|^~\\&|EHR|HOSP|LAB|HOSP|20260101120001||ACK^A01^ACK|A1|P|2.5.1\rMSA|AA|" + control_id]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def server(pki: DevPki, recorder: Recorder) -> AsyncIterator[MllpServer]:
    context = ssl_context(pki.server_cert, pki.server_key, pki.ca_cert)
    server = MllpServer(recorder, context, Limits(handshake_timeout=0.5))
    await server.start("127.0.0.1", 0)
    yield server
    await server.close()


def client_context(pki: DevPki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_cert)
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context


async def eventually_refused(server: MllpServer, context: ssl.SSLContext) -> None:
    """The handshake fails (under TLS 1.3 the client may only learn it on reading): no reply, and the
    server never saw a connection (the event loop refuses it before the server's callback)."""
    try:
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
            try:
                writer.write(encode(MESSAGE.encode()))
                assert await reader.read(65536) == b""
            finally:
                writer.transport.abort()
    except OSError:
        pass
    assert server.stats.messages == 0 and server.stats.connections_open == 0


async def test_python_hl7_client_gets_its_ack(server: MllpServer, pki: DevPki, recorder: Recorder) -> None:
    context = client_context(pki, pki.client_cert, pki.client_key)
    async with asyncio.timeout(WAIT):
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", server.port, ssl=context)
        try:
            writer.writemessage(hl7.parse(MESSAGE))
            await writer.drain()
            reply = await reader.readmessage()
        finally:
            writer.close()
            await writer.wait_closed()
    assert str(reply.segment("MSA")[2]) == "MSG00042"
    assert recorder.payloads == [MESSAGE.encode()]


async def test_client_without_certificate_is_refused(
    server: MllpServer, pki: DevPki, recorder: Recorder
) -> None:
    await eventually_refused(server, client_context(pki))
    assert recorder.payloads == []


async def test_certificate_from_another_ca_is_refused(
    server: MllpServer, pki: DevPki, recorder: Recorder, tmp_path: Path
) -> None:
    create_ca(tmp_path / "ca.pem", tmp_path / "ca-key.pem", "Other CA")
    issue_certificate(tmp_path / "ca.pem", tmp_path / "ca-key.pem", "intruder", tmp_path / "c.pem", tmp_path / "k.pem")
    await eventually_refused(server, client_context(pki, tmp_path / "c.pem", tmp_path / "k.pem"))
    assert recorder.payloads == []


async def test_tls_1_1_client_is_refused(
    server: MllpServer, pki: DevPki, recorder: Recorder
) -> None:
    context = client_context(pki, pki.client_cert, pki.client_key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ssl deprecates TLS 1.1, which is the point
        context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer TLS 1.1 at all
    await eventually_refused(server, context)
    assert recorder.payloads == []


async def test_client_that_never_completes_the_handshake_is_dropped(server: MllpServer) -> None:
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            assert await reader.read(65536) == b""  # dropped after handshake_timeout (0.5 s here)
        finally:
            writer.transport.abort()
    assert server.stats.connections_open == 0


async def openssl_client(server: MllpServer, *options: str) -> tuple[int, bytes]:
    """Run ``openssl s_client``, send one message, read until an ACK or the end; exit code, output."""
    if shutil.which("openssl") is None:
        reason = "the openssl command-line tool is not installed (Debian package openssl)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI must run the refusal checks with a real OpenSSL client
        pytest.skip(reason)
    pipe, quiet = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
    command = ("openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-quiet", "-no_ign_eof", *options)
    process = await asyncio.create_subprocess_exec(*command, stdin=pipe, stdout=pipe, stderr=quiet)
    assert process.stdin is not None and process.stdout is not None
    out = b""
    try:
        async with asyncio.timeout(WAIT):
            process.stdin.write(encode(MESSAGE.encode()))
            while b"MSA" not in out and (chunk := await process.stdout.read(4096)):
                out += chunk
            process.stdin.close()
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode or 0, out


async def test_openssl_client_without_certificate_is_refused(
    server: MllpServer, pki: DevPki, recorder: Recorder
) -> None:
    _, out = await openssl_client(server, "-CAfile", str(pki.ca_cert))
    assert b"MSA" not in out
    assert recorder.payloads == []


async def test_openssl_tls_1_1_client_is_refused(
    server: MllpServer, pki: DevPki, recorder: Recorder
) -> None:
    options = ("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", str(pki.client_cert), "-key", str(pki.client_key))
    returncode, out = await openssl_client(server, "-CAfile", str(pki.ca_cert), *options)
    assert returncode != 0
    assert b"MSA" not in out
    assert recorder.payloads == []


async def test_openssl_client_with_certificate_is_served(server: MllpServer, pki: DevPki) -> None:
    options = ("-cert", str(pki.client_cert), "-key", str(pki.client_key))
    _, out = await openssl_client(server, "-CAfile", str(pki.ca_cert), *options)
    assert b"MSA|AA|MSG00042" in out
