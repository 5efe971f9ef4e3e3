"""POST each alert as JSON to a webhook (a SIEM, a pager): HTTPS only, except to a loopback address.

Delivery is off every request's path: :meth:`Webhook.submit` only queues (bounded; an alert that does
not fit is dropped from delivery, never from the database), and a background task posts each one
with a timeout per attempt and a bounded number of attempts with exponential backoff. Failures are
logged with the attempt count and the reason (exception type or HTTP status), never with the URL
(it may carry a token) or the alert. A small HTTP/1.1 client on asyncio streams keeps the server
free of another HTTP dependency; it sends one request per connection and reads only the status line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ehr.crypto.canonical import canonical_json

log = logging.getLogger("ehr.audit.webhook")

_RETRYABLE = frozenset({408, 425, 429})
_MAX_STATUS_LINE = 8192


@dataclass(frozen=True, slots=True)
class Target:
    https: bool
    host: str
    port: int
    target: str  # path and query, as sent in the request line

    @classmethod
    def parse(cls, url: str) -> Target:
        """ValueError unless ``url`` is https://..., or http:// to a loopback host."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("the alert webhook URL must be an https:// URL")
        if parts.username or parts.password:
            raise ValueError("the alert webhook URL must not carry credentials (put a token in the path)")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("the alert webhook URL must use https (plain http only to a loopback address)")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)  # a malformed port raises ValueError
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(https, parts.hostname, port, target)

    def request(self, body: bytes) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port != (443 if self.https else 80):
            host += f":{self.port}"
        head = (
            f"POST {self.target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ehr-alerts/1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return head.encode("ascii") + body


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Verify the receiver's certificate and name, against ``ca_file`` alone when given (a private CA)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _status(line: bytes) -> int:
    version, _, rest = line.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
        raise ValueError("not an HTTP/1.x response")
    return int(rest[:3])


class Webhook:
    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.5,
        max_pending: int = 1000,
    ) -> None:
        self._target = Target.parse(url)
        self._ssl = client_context(ca_file) if self._target.https else None
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._pending: asyncio.Queue[bytes] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self.delivered = self.failed = self.dropped = 0

    def submit(self, payload: Mapping[str, Any]) -> None:
        """Queue one alert for delivery; returns at once, whatever the receiver does."""
        try:
            self._pending.put_nowait(canonical_json(payload))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("alert webhook: queue full, an alert was not sent (it is stored)")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, grace: float) -> None:
        """Give queued alerts ``grace`` seconds to go out, then stop."""
        if self._task is None:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._pending.join(), grace)
        self._task.cancel()
        with suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            body = await self._pending.get()
            try:
                await self.deliver(body)
            finally:
                self._pending.task_done()

    async def deliver(self, body: bytes) -> bool:
        """Post ``body``, retrying on network errors, timeouts, 408/425/429 and 5xx."""
        reason = ""
        for attempt in range(1, self._attempts + 1):
            reason, retry = await self._attempt(body)
            if not reason:
                self.delivered += 1
                return True
            if not retry or attempt == self._attempts:
                break
            log.warning("alert webhook: attempt %d failed (%s), retrying", attempt, reason)
            await asyncio.sleep(self._backoff * 2 ** (attempt - 1) * (1 + secrets.randbelow(250) / 1000))
        self.failed += 1
        log.error("alert webhook: delivery failed after %d attempt(s) (%s)", attempt, reason)
        return False

    async def _attempt(self, body: bytes) -> tuple[str, bool]:
        """("", _) when delivered, else (reason, whether to retry)."""
        try:
            status = await asyncio.wait_for(self._post(body), self._timeout)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            return type(exc).__name__, True
        if 200 <= status < 300:
            return "", False
        return f"HTTP {status}", status in _RETRYABLE or status >= 500

    async def _post(self, body: bytes) -> int:
        target = self._target
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=self._ssl, server_hostname=target.host if self._ssl else None,
            limit=_MAX_STATUS_LINE,
        )
        try:
            writer.write(target.request(body))
            await writer.drain()
            return _status(await reader.readline())
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
