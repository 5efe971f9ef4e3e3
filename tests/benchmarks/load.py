"""A small HTTP/1.1 keep-alive load generator over mutual TLS: N connections, a fixed request count.

Why not ApacheBench: ``ab`` speaks HTTP/1.0, and uvicorn never keeps an HTTP/1.0 connection
alive (``keep_alive = http_version != "1.0" and ...`` in its httptools protocol), so ``ab -k``
reports "Keep-Alive requests: 0" and pays a full mTLS handshake per request: it would measure
the handshake, not the server.

Each of ``concurrency`` clients holds one connection (opened before the clock starts) and sends
one request at a time, taking the next from a shared budget until ``total`` have been sent.
Latency is measured from writing the request to reading the last byte of the response. A load is
one request repeated, or a list of :class:`Exchange` taken in turn, each with a check of its answer:
a response with the expected status but the wrong content counts as a failure, not as a fast result.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

WHY_NOT_AB = "not ab: ab speaks HTTP/1.0, which uvicorn never keeps alive, so every ab request is a new mTLS handshake"
REQUEST_TIMEOUT = 30.0  # seconds for one request/response exchange
MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """A response this client does not understand (no Content-Length, bad status line)."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    tls: ssl.SSLContext


@dataclass(frozen=True)
class Load:
    """What to run: an operation's name, the number of connections and a fixed request count."""

    operation: str
    concurrency: int
    requests: int

    @property
    def time_limit(self) -> float:
        """Generous: 60 s plus 50 ms a request."""
        return 60 + self.requests * 0.05

    def scaled(self, factor: float) -> Load:
        return Load(self.operation, self.concurrency, max(self.concurrency, round(self.requests * factor)))


def http_request(
    method: str, path: str, body: bytes = b"", *, headers: tuple[str, ...] = (),
    content_type: str = "application/fhir+json",
) -> bytes:
    """One raw HTTP/1.1 request; a body is sent as ``content_type``; ``headers`` are "Name: value"."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: application/fhir+json", *headers]
    if body:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


Check = Callable[[bytes], str | None]
"""Looks at a response body (with the expected status): None if right, else what is wrong. May raise
ValueError, KeyError, TypeError or IndexError, which count as a wrong answer too."""


@dataclass(frozen=True)
class Exchange:
    request: bytes
    check: Check | None = None


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, target: Target) -> Connection:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=target.tls, limit=MAX_HEAD
            )
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> Response:
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, length, keep_alive = _parse_head(head)
        return Response(status, await self._reader.readexactly(length), keep_alive)

    def close(self) -> None:
        self._writer.close()


def _parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, Content-Length and whether the server keeps the connection open."""
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1.1 "):
        raise ProtocolError(f"unexpected status line {lines[0][:40]!r}")
    length, keep_alive = None, True
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            keep_alive = False
    if length is None:
        raise ProtocolError("response without Content-Length")
    return int(lines[0][9:12]), length, keep_alive


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    expected_status: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    wrong_answers: Counter[str] = field(default_factory=Counter)
    connections: int = 0

    @property
    def failures(self) -> int:
        """Requests without the expected status (transport errors, timeouts, other statuses) or answer."""
        return self.requests - self.statuses[self.expected_status] + self.wrong_answers.total()

    @property
    def requests_per_second(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def percentile_ms(self, p: float) -> float:
        """Nearest-rank percentile of the completed requests' latencies."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class _Budget:
    """The exchanges still to send: ``total`` of them, cycling through ``exchanges``."""

    def __init__(self, exchanges: Sequence[Exchange], total: int) -> None:
        self._exchanges = exchanges
        self._total = total
        self._sent = 0

    def take(self) -> Exchange | None:
        if self._sent >= self._total:
            return None
        self._sent += 1
        return self._exchanges[(self._sent - 1) % len(self._exchanges)]


async def run_load(
    target: Target, request: bytes | Sequence[Exchange], *, total: int, concurrency: int, expected_status: int,
    time_limit: float,
) -> LoadResult:
    """Send ``total`` requests over ``concurrency`` keep-alive connections, within ``time_limit`` s:
    ``request`` repeated, or the exchanges in turn (cycling if ``total`` is larger)."""
    exchanges = [Exchange(request)] if isinstance(request, bytes) else request
    if not exchanges:
        raise ValueError("a load needs at least one request")
    result = LoadResult(total, concurrency, expected_status)
    connections = await asyncio.gather(*(_connect(target, result) for _ in range(concurrency)))
    budget = _Budget(exchanges, total)
    start = time.perf_counter()
    try:
        async with asyncio.timeout(time_limit):
            await asyncio.gather(*(_client(target, c, budget, result) for c in connections))
    except TimeoutError:
        result.errors[f"run not finished within {time_limit:g} s"] += 1
    result.seconds = time.perf_counter() - start
    return result


async def _connect(target: Target, result: LoadResult) -> Connection | None:
    try:
        connection = await Connection.open(target)
    except (OSError, TimeoutError) as exc:
        result.errors[_describe(exc)] += 1
        return None
    result.connections += 1
    return connection


async def _client(target: Target, connection: Connection | None, budget: _Budget, result: LoadResult) -> None:
    try:
        while (exchange := budget.take()) is not None:
            connection = connection or await _connect(target, result)
            if connection is not None:
                connection = await _send(connection, exchange, result)
    finally:
        if connection is not None:
            connection.close()


async def _send(connection: Connection, exchange: Exchange, result: LoadResult) -> Connection | None:
    """One timed exchange, then its check; returns the connection if it can be used again."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            response = await connection.exchange(exchange.request)
    except (OSError, TimeoutError, EOFError, ValueError, ProtocolError) as exc:  # IncompleteReadError is an EOFError
        result.errors[_describe(exc)] += 1
        connection.close()
        return None
    result.latencies_ms.append((time.perf_counter() - start) * 1000)
    result.statuses[response.status] += 1
    if response.status == result.expected_status and exchange.check is not None:
        if problem := checked(exchange.check, response.body):
            result.wrong_answers[problem[:200]] += 1
    if response.keep_alive:
        return connection
    connection.close()
    return None


def checked(check: Check, body: bytes) -> str | None:
    try:
        return check(body)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f"unreadable answer: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


async def exchange_once(target: Target, request: bytes) -> Response:
    """One request on a fresh connection (setup and readiness checks)."""
    connection = await Connection.open(target)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            return await connection.exchange(request)
    finally:
        connection.close()
