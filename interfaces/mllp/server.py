"""An asyncio MLLP server over mutual TLS, with everything that reads from the network bounded.

Each connection has its own two tasks and nothing shared but counters: a reader that decodes
blocks (:mod:`interfaces.mllp.framing`) into a queue, and a worker that answers them strictly
in order, since HL7 acknowledgements must follow message order. The bounds, from :class:`Limits`:

* connections: beyond ``max_connections`` a verified connection is closed at once;
* handshake: a client that has not finished TLS within ``handshake_timeout`` is dropped (the event
  loop runs the handshake at accept: ``StreamWriter.start_tls`` after a plain accept, which would
  let the limit count handshakes too, hangs under uvloop, the loop ``ehr serve`` runs on);
* size: a payload over ``max_message_bytes`` ends the connection without a reply (no ACK can be
  built for a message that was never read whole); blocks answered before it still get replies;
* pipelining: at most ``max_pipelined`` messages per connection are read and not yet answered;
  at that point the reader stops reading the socket and TCP pushes back on the sender;
* time: a connection with nothing in flight that sends nothing for ``idle_timeout`` is closed,
  and so is one that does not take its replies within the same time.

Bytes outside blocks are dropped and counted, never fatal. A handler that raises closes only its
connection. Logs name the peer address, sizes and exception types, never payloads (ePHI) or
exception messages and tracebacks, which may quote them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from ehr.pki import certificate_thumbprint
from ehr.tls import server_ssl_context
from interfaces.mllp.framing import Decoder, Event, FrameTooLarge, FramingError, encode

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# How long a closing connection waits for the peer's TLS close_notify before dropping the socket.
_CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Peer:
    """The other end of one connection, as the TLS handshake verified it."""

    address: str
    cert_thumbprint: str  # RFC 8705 §3.1 x5t#S256 of the client certificate
    cert_subject: str  # RFC 4514 string


Handler = Callable[[bytes, Peer], Awaitable[list[bytes]]]
"""One payload in, the payloads to send back in order (none, an ACK, or two in enhanced mode)."""


@dataclass(frozen=True)
class Limits:
    """Bounds per listener (sizes in bytes, times in seconds).

    A connection buffers at most about ``(max_pipelined + 1) * max_message_bytes`` of payload
    (33 MiB by default), so a host should budget that times ``max_connections``.
    """

    max_message_bytes: int = 1024 * 1024
    idle_timeout: float = 60.0
    max_pipelined: int = 32
    max_connections: int = 256
    handshake_timeout: float = 10.0

    def __post_init__(self) -> None:
        if min(astuple(self)) <= 0:
            raise ValueError("MLLP limits must be positive")


@dataclass
class Stats:
    """Counters for logs and tests, shared by all connections (one event loop, so no locks)."""

    connections_open: int = 0
    connections_refused: int = 0
    messages: int = 0
    framing_errors: int = 0
    oversize: int = 0
    handler_errors: int = 0
    idle_timeouts: int = 0


def ssl_context(certfile: Path, keyfile: Path, client_ca: Path) -> ssl.SSLContext:
    """The HTTP listener's TLS 1.2+ policy (RFC 9325), but a client certificate is mandatory."""
    context = server_ssl_context(certfile, keyfile, client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols([])  # MLLP has no ALPN id; offer none rather than http/1.1
    return context


class _IdleTimeout(Exception):
    """Nothing arrived for ``idle_timeout`` while nothing was in flight."""


_Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _Connection:
    """One verified client: a reader task feeding a worker that replies in order."""

    def __init__(self, streams: _Streams, peer: Peer, handler: Handler, limits: Limits, stats: Stats) -> None:
        self._reader, self._writer = streams
        self.peer = peer
        self._handler, self._limits, self._stats = handler, limits, stats
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()  # bounded by _slots
        self._slots = asyncio.Semaphore(limits.max_pipelined)
        self._in_flight = 0
        self._framing_errors = 0
        self._reading: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._reading = asyncio.create_task(self._read())
        try:
            await self._work()
        finally:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    def stop_reading(self) -> None:
        """Take no new messages; those already queued are still answered."""
        if self._reading is not None:
            self._reading.cancel()

    async def _read(self) -> None:
        try:
            await self._read_blocks()
        except FrameTooLarge:
            self._stats.oversize += 1
            limit = self._limits.max_message_bytes
            logger.warning("MLLP message from %s over %d bytes; closing", self.peer.address, limit)
        except _IdleTimeout:
            self._stats.idle_timeouts += 1
            logger.info("MLLP connection from %s idle; closing", self.peer.address)
        except OSError as exc:
            logger.info("MLLP read from %s failed: %s", self.peer.address, type(exc).__name__)
        finally:
            self._queue.put_nowait(None)

    async def _read_blocks(self) -> None:
        decoder = Decoder(self._limits.max_message_bytes)
        while data := await self._receive():
            for event in decoder.feed(data):
                await self._accept(event)
        for event in decoder.finish():
            await self._accept(event)

    async def _receive(self) -> bytes:
        while True:
            try:
                async with asyncio.timeout(self._limits.idle_timeout):
                    return await self._reader.read(_CHUNK)
            except TimeoutError:
                if self._in_flight == 0:  # a client awaiting a slow ACK is not idle
                    raise _IdleTimeout from None

    async def _accept(self, event: Event) -> None:
        if isinstance(event, FramingError):
            self._framing_error(event)
            return
        await self._slots.acquire()  # back-pressure: no socket reads while all slots are taken
        self._in_flight += 1
        self._stats.messages += 1
        self._queue.put_nowait(event.payload)

    def _framing_error(self, event: FramingError) -> None:
        self._stats.framing_errors += 1
        self._framing_errors += 1
        count = self._framing_errors
        if str(count).strip("0") == "1":  # only the 1st, 10th, 100th...: a noisy peer cannot flood the log
            message = "MLLP framing error #%d from %s: %s (%d bytes dropped)"
            logger.warning(message, count, self.peer.address, event.reason, event.discarded)

    async def _work(self) -> None:
        while (payload := await self._queue.get()) is not None:
            if not await self._answer(payload):
                return
            self._in_flight -= 1
            self._slots.release()

    async def _answer(self, payload: bytes) -> bool:
        try:
            replies = b"".join(encode(reply) for reply in await self._handler(payload, self.peer))
        except Exception as exc:  # noqa: BLE001 - the message or traceback may quote ePHI: log the type
            self._stats.handler_errors += 1
            size, name = len(payload), type(exc).__name__
            logger.error("MLLP handler failed on a %d-byte message from %s: %s; closing", size, self.peer.address, name)
            return False
        return await self._send(replies)

    async def _send(self, data: bytes) -> bool:
        if not data:
            return True
        try:
            self._writer.write(data)
            async with asyncio.timeout(self._limits.idle_timeout):
                await self._writer.drain()
        except (TimeoutError, OSError) as exc:
            logger.info("MLLP write to %s failed: %s; closing", self.peer.address, type(exc).__name__)
            return False
        return True


class MllpServer:
    """Accepts TLS connections, verifies client certificates, and serves each connection apart."""

    def __init__(
        self, handler: Handler, context: ssl.SSLContext, limits: Limits | None = None, *, grace_period: float = 10.0
    ) -> None:
        if context.verify_mode != ssl.CERT_REQUIRED:
            raise ValueError("the MLLP listener requires client certificates (use ssl_context())")
        self._handler, self._context = handler, context
        self._limits = limits or Limits()
        self._grace_period = grace_period
        self.stats = Stats()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], _Connection | None] = {}  # None: not yet running
        self._closing = False
        self._closed = asyncio.Event()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen; port 0 picks a free one (see :attr:`port`). ``reuse_port`` lets worker processes share it."""
        self._server = await asyncio.start_server(
            self._on_accept, host, port, ssl=self._context, ssl_handshake_timeout=self._limits.handshake_timeout,
            limit=_CHUNK, reuse_port=reuse_port,
        )

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the MLLP server is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` has finished; if cancelled, close first."""
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop accepting and reading; answer what was already read within the grace period."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        await self._finish_connections()
        self._closed.set()

    async def _finish_connections(self) -> None:
        for task, connection in list(self._connections.items()):
            if connection is None:
                task.cancel()  # its task has not started: nothing has been read
            else:
                connection.stop_reading()
        if not self._connections:
            return
        _, late = await asyncio.wait(list(self._connections), timeout=self._grace_period)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or self.stats.connections_open >= self._limits.max_connections:
            self.stats.connections_refused += 1
            writer.transport.abort()
            return
        self.stats.connections_open += 1
        task = asyncio.create_task(self._serve((reader, writer)))
        self._connections[task] = None
        task.add_done_callback(self._connections.pop)

    async def _serve(self, streams: _Streams) -> None:
        writer = streams[1]
        try:
            connection = _Connection(streams, _peer(writer), self._handler, self._limits, self.stats)
            if (task := asyncio.current_task()) is not None:
                self._connections[task] = connection
            await connection.run()
        finally:
            self.stats.connections_open -= 1
            await _close(writer)


def _peer(writer: asyncio.StreamWriter) -> Peer:
    """Who the handshake verified (CERT_REQUIRED: a connection reaching here has a certificate)."""
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return Peer(_address(writer), certificate_thumbprint(der), subject)


def _address(writer: asyncio.StreamWriter) -> str:
    host, port = writer.get_extra_info("peername")[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (TimeoutError, OSError):
        writer.transport.abort()
