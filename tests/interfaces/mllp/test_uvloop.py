"""The listener on uvloop, the loop ``ehr serve`` runs it on (uvicorn's ``loop="uvloop"``).

The other tests here run on asyncio's own loop. uvloop differs where it matters: it hung on
``StreamWriter.start_tls`` after a plain accept, so these run the essentials on it too.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest
import uvloop

from ehr.pki import DevPki
from interfaces.mllp.connection import Peer
from interfaces.mllp.framing import encode
from interfaces.mllp.server import MllpServer, ssl_context

Scenario = Callable[[MllpServer], Awaitable[None]]


async def echo(payload: bytes, peer: Peer) -> list[bytes]:
    return [b"ACK|" + payload]


def on_uvloop(pki: DevPki, scenario: Scenario) -> None:
    async def main() -> None:
        server = MllpServer(echo, ssl_context(pki.server_cert, pki.server_key, pki.ca_cert))
        await server.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(server), 20)
        finally:
            await server.close()

    uvloop.run(main())


def client(pki: DevPki, *, certificate: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_cert)
    if certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


def test_pipelined_messages_on_several_connections_are_answered_in_order(pki: DevPki) -> None:
    async def scenario(server: MllpServer) -> None:
        async def one(n: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client(pki))
            messages = [f"MSH|{n}-{i}".encode() for i in range(50)]
            writer.write(b"".join(encode(m) for m in messages))
            replies = [(await reader.readuntil(b"\x1c\r"))[1:-2] for _ in messages]
            assert replies == [b"ACK|" + m for m in messages]
            writer.close()

        await asyncio.gather(*(one(n) for n in range(4)))

    on_uvloop(pki, scenario)


def test_a_client_without_a_certificate_gets_nothing(pki: DevPki) -> None:
    async def scenario(server: MllpServer) -> None:
        with pytest.raises((OSError, asyncio.IncompleteReadError)):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client(pki, certificate=False))
            writer.write(encode(b"MSH|x"))
            await reader.readuntil(b"\x1c\r")
        assert server.stats.messages == 0

    on_uvloop(pki, scenario)
