"""The MLLP server over real TLS sockets: ordering, pipelining, isolation, limits and shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from ehr.pki import DevPki, certificate_thumbprint
from interfaces.mllp.connection import Limits, Peer
from interfaces.mllp.framing import Decoder, Frame, encode
from interfaces.mllp.server import MllpServer, ssl_context

WAIT = 10.0  # generous: only ever reached when something is broken
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
MakeServer = Callable[..., Awaitable[MllpServer]]
Connect = Callable[[MllpServer], Awaitable[Streams]]


def ack(payload: bytes) -> bytes:
    return b"ACK:" + hashlib.sha256(payload).hexdigest().encode()


class EchoHandler:
    """Replies ACK:<sha256>; some payloads block on a gate, raise, or reply zero or two times."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Peer]] = []
        self.gates: dict[bytes, asyncio.Event] = {}

    async def __call__(self, payload: bytes, peer: Peer) -> list[bytes]:
        self.calls.append((payload, peer))
        if payload in self.gates:
            await self.gates[payload].wait()
        if payload.startswith(b"boom"):
            raise RuntimeError(payload.decode())
        if payload == b"none":
            return []
        if payload == b"two":
            return [ack(payload), ack(payload + b"2")]
        return [ack(payload)]


@pytest.fixture
def handler() -> EchoHandler:
    return EchoHandler()


@pytest.fixture
async def make_server(pki: DevPki, handler: EchoHandler) -> AsyncIterator[MakeServer]:
    servers: list[MllpServer] = []

    async def make(limits: Limits | None = None, grace_period: float = WAIT) -> MllpServer:
        context = ssl_context(pki.server_cert, pki.server_key, pki.ca_cert)
        server = MllpServer(handler, context, limits, grace_period=grace_period)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def server(make_server: MakeServer) -> MllpServer:
    return await make_server()


@pytest.fixture
async def connect(pki: DevPki) -> AsyncIterator[Connect]:
    writers: list[asyncio.StreamWriter] = []

    async def open_client(server: MllpServer) -> Streams:
        context = ssl.create_default_context(cafile=pki.ca_cert)
        context.load_cert_chain(pki.client_cert, pki.client_key)
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=context)
        writers.append(writer)
        return reader, writer

    yield open_client
    for writer in writers:
        writer.transport.abort()


async def send(writer: asyncio.StreamWriter, *payloads: bytes) -> None:
    writer.write(b"".join(encode(p) for p in payloads))
    await writer.drain()


async def receive(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder, got = Decoder(1 << 20), list[bytes]()
    async with asyncio.timeout(WAIT):
        while len(got) < count:
            data = await reader.read(65536)
            assert data, f"connection closed after {len(got)} of {count} replies"
            got += [e.payload for e in decoder.feed(data) if isinstance(e, Frame)]
    return got


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    async with asyncio.timeout(WAIT):
        try:
            return await reader.read(65536) == b""
        except OSError:
            return True


async def eventually(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not condition():  # noqa: ASYNC110 - polls the server's counters, which signal nothing
            await asyncio.sleep(0.01)


async def test_one_message_gets_its_reply_and_the_verified_peer(
    server: MllpServer, connect: Connect, handler: EchoHandler, pki: DevPki
) -> None:
    reader, writer = await connect(server)
    await send(writer, b"MSH|^~\\&|one")
    assert await receive(reader, 1) == [ack(b"MSH|^~\\&|one")]
    peer = handler.calls[0][1]
    assert peer.cert_thumbprint == certificate_thumbprint(pki.client_cert.read_text())
    assert peer.cert_subject == "CN=demo-client"
    assert peer.address.startswith("127.0.0.1:")
    writer.close()
    async with asyncio.timeout(WAIT):
        await writer.wait_closed()
    await eventually(lambda: server.stats.connections_open == 0)


async def test_pipelined_messages_are_answered_in_order(server: MllpServer, connect: Connect) -> None:
    reader, writer = await connect(server)
    messages = [f"MSH|{i}".encode() for i in range(200)]
    await send(writer, *messages)
    assert await receive(reader, 200) == [ack(m) for m in messages]
    assert server.stats.messages == 200


async def test_zero_or_two_replies_keep_message_order(server: MllpServer, connect: Connect) -> None:
    reader, writer = await connect(server)
    await send(writer, b"none", b"two", b"one")
    assert await receive(reader, 3) == [ack(b"two"), ack(b"two2"), ack(b"one")]


async def test_concurrent_connections_each_get_their_own_replies(server: MllpServer, connect: Connect) -> None:
    async def client(n: int) -> list[bytes]:
        reader, writer = await connect(server)
        await send(writer, *(f"MSH|{n}|{i}".encode() for i in range(20)))
        return await receive(reader, 20)

    results = await asyncio.gather(*(client(n) for n in range(8)))
    for n, replies in enumerate(results):
        assert replies == [ack(f"MSH|{n}|{i}".encode()) for i in range(20)]


async def test_stalled_or_slow_clients_do_not_delay_another_clients_reply(
    server: MllpServer, connect: Connect, handler: EchoHandler
) -> None:
    handler.gates[b"slow"] = asyncio.Event()
    _, half = await connect(server)
    half.write(b"\x0bMSH|half a frame, then silence")
    _, slow = await connect(server)
    await send(slow, b"slow")
    await eventually(lambda: any(payload == b"slow" for payload, _ in handler.calls))
    reader, writer = await connect(server)
    await send(writer, b"MSH|other")
    assert await receive(reader, 1) == [ack(b"MSH|other")]
    handler.gates[b"slow"].set()


async def test_bytes_outside_frames_are_counted_and_the_next_frame_answered(
    server: MllpServer, connect: Connect
) -> None:
    reader, writer = await connect(server)
    writer.write(b"stray bytes" + encode(b"MSH|after"))
    assert await receive(reader, 1) == [ack(b"MSH|after")]
    assert server.stats.framing_errors == 1


async def test_framing_errors_are_logged_sparingly_and_without_content(
    server: MllpServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(server)
    writer.write(b"\x0bPID|||SECRET-MRN" * 150 + encode(b"MSH|after"))
    assert await receive(reader, 1) == [ack(b"MSH|after")]
    assert server.stats.framing_errors == 150
    assert caplog.text.count("MLLP framing error") == 3  # the 1st, 10th and 100th
    assert "SECRET-MRN" not in caplog.text


async def test_oversize_frame_closes_only_that_connection_without_a_reply(
    make_server: MakeServer, connect: Connect, handler: EchoHandler
) -> None:
    server = await make_server(Limits(max_message_bytes=1024))
    other_reader, other_writer = await connect(server)
    reader, writer = await connect(server)
    writer.write(encode(b"MSH|small") + encode(b"x" * 4096))
    assert await receive(reader, 1) == [ack(b"MSH|small")]
    assert await closed_by_server(reader)
    assert server.stats.oversize == 1
    assert [payload for payload, _ in handler.calls] == [b"MSH|small"]
    await send(other_writer, b"MSH|still here")
    assert await receive(other_reader, 1) == [ack(b"MSH|still here")]


async def test_handler_error_closes_only_that_connection_and_logs_no_payload(
    server: MllpServer, connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(server)
    await send(writer, b"boom PID|||SECRET-MRN")
    assert await closed_by_server(reader)
    assert server.stats.handler_errors == 1
    assert "SECRET-MRN" not in caplog.text
    assert "RuntimeError" in caplog.text
    reader, writer = await connect(server)
    await send(writer, b"MSH|next")
    assert await receive(reader, 1) == [ack(b"MSH|next")]


async def test_idle_connection_is_closed(make_server: MakeServer, connect: Connect) -> None:
    server = await make_server(Limits(idle_timeout=0.3))
    reader, _ = await connect(server)
    assert await closed_by_server(reader)
    assert server.stats.idle_timeouts == 1


async def test_awaiting_a_slow_reply_is_not_idle(
    make_server: MakeServer, connect: Connect, handler: EchoHandler
) -> None:
    server = await make_server(Limits(idle_timeout=0.5))
    handler.gates[b"slow"] = asyncio.Event()
    reader, writer = await connect(server)
    await send(writer, b"slow")
    await asyncio.sleep(1.2)
    handler.gates[b"slow"].set()
    assert await receive(reader, 1) == [ack(b"slow")]


async def test_connections_beyond_the_limit_are_closed_at_once(make_server: MakeServer, connect: Connect) -> None:
    server = await make_server(Limits(max_connections=2))
    clients = [await connect(server) for _ in range(2)]
    await eventually(lambda: server.stats.connections_open == 2)
    try:
        reader, _ = await connect(server)
        assert await reader.read(65536) == b""  # closed once the handshake is through
    except OSError:
        pass
    await eventually(lambda: server.stats.connections_refused == 1)
    clients[0][1].transport.abort()
    await eventually(lambda: server.stats.connections_open == 1)
    reader, writer = await connect(server)
    await send(writer, b"MSH|room again")
    assert await receive(reader, 1) == [ack(b"MSH|room again")]


async def test_pipelining_is_bounded_by_back_pressure(
    make_server: MakeServer, connect: Connect, handler: EchoHandler
) -> None:
    server = await make_server(Limits(max_pipelined=3))
    handler.gates[b"MSH|0"] = asyncio.Event()
    reader, writer = await connect(server)
    messages = [f"MSH|{i}".encode() for i in range(50)]
    writer.write(b"".join(encode(m) for m in messages))
    await eventually(lambda: server.stats.messages == 3)
    await asyncio.sleep(0.2)  # the reader would have taken more by now if it were not held back
    assert server.stats.messages == 3
    handler.gates[b"MSH|0"].set()
    assert await receive(reader, 50) == [ack(m) for m in messages]


async def test_close_lets_a_message_in_flight_finish_and_refuses_new_work(
    server: MllpServer, connect: Connect, handler: EchoHandler
) -> None:
    handler.gates[b"MSH|in flight"] = asyncio.Event()
    port = server.port
    reader, writer = await connect(server)
    await send(writer, b"MSH|in flight")
    await eventually(lambda: len(handler.calls) == 1)
    closing = asyncio.create_task(server.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    handler.gates[b"MSH|in flight"].set()
    assert await receive(reader, 1) == [ack(b"MSH|in flight")]
    assert await closed_by_server(reader)
    async with asyncio.timeout(WAIT):
        await closing
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_close_gives_up_on_a_stuck_handler_after_the_grace_period(
    make_server: MakeServer, connect: Connect, handler: EchoHandler
) -> None:
    server = await make_server(grace_period=0.2)
    handler.gates[b"stuck"] = asyncio.Event()
    reader, writer = await connect(server)
    await send(writer, b"stuck")
    await eventually(lambda: len(handler.calls) == 1)
    async with asyncio.timeout(WAIT):
        await server.close()
    assert await closed_by_server(reader)
    assert server.stats.connections_open == 0


async def test_serve_forever_returns_once_closed(server: MllpServer) -> None:
    serving = asyncio.create_task(server.serve_forever())
    await server.close()
    async with asyncio.timeout(WAIT):
        await serving


def test_listener_refuses_a_context_without_mandatory_client_certificates(pki: DevPki, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(ValueError):
        MllpServer(EchoHandler(), context)
    assert ssl_context(pki.server_cert, pki.server_key, pki.ca_cert).verify_mode == ssl.CERT_REQUIRED
