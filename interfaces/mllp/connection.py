"""One verified MLLP connection: a reader task feeding a worker that answers in order, and the
bounds and counters it works within (interfaces/mllp/server.py accepts the connections)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import astuple, dataclass

from interfaces.mllp.framing import Decoder, Event, FrameTooLarge, FramingError, encode

logger = logging.getLogger("interfaces.mllp.server")

CHUNK = 64 * 1024


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
    (9 MiB by default), so a host should budget that times ``max_connections``.
    """

    max_message_bytes: int = 1024 * 1024
    idle_timeout: float = 60.0
    max_pipelined: int = 8
    max_connections: int = 64
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


class _IdleTimeout(Exception):
    """Nothing arrived for ``idle_timeout`` while nothing was in flight."""


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Connection:
    """One verified client: a reader task feeding a worker that replies in order."""

    def __init__(self, streams: Streams, peer: Peer, handler: Handler, limits: Limits, stats: Stats) -> None:
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
                    return await self._reader.read(CHUNK)
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
