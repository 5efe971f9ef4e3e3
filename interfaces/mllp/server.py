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
from pathlib import Path
from typing import Any

from cryptography import x509

from ehr.pki import certificate_thumbprint
from ehr.tls import server_ssl_context
from interfaces.mllp.connection import CHUNK, Connection, Handler, Limits, Peer, Stats, Streams

logger = logging.getLogger(__name__)

# How long a closing connection waits for the peer's TLS close_notify before dropping the socket.
_CLOSE_TIMEOUT = 2.0


def ssl_context(certfile: Path, keyfile: Path, client_ca: Path) -> ssl.SSLContext:
    """The HTTP listener's TLS 1.2+ policy (RFC 9325), but a client certificate is mandatory."""
    context = server_ssl_context(certfile, keyfile, client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols([])  # MLLP has no ALPN id; offer none rather than http/1.1
    return context


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
        self._connections: dict[asyncio.Task[Any], Connection | None] = {}  # None: not yet running
        self._closing = False
        self._closed = asyncio.Event()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Listen; port 0 picks a free one (see :attr:`port`). ``reuse_port`` lets worker processes share it."""
        self._server = await asyncio.start_server(
            self._on_accept, host, port, ssl=self._context, ssl_handshake_timeout=self._limits.handshake_timeout,
            limit=CHUNK, reuse_port=reuse_port,
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

    async def _serve(self, streams: Streams) -> None:
        writer = streams[1]
        try:
            connection = Connection(streams, _peer(writer), self._handler, self._limits, self.stats)
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
