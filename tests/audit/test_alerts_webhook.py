"""Alerts POSTed to a webhook (ehr/audit/webhook.py), against a real HTTP(S) receiver on 127.0.0.1:
https only except loopback, bounded retries with backoff, a timeout, never blocking the caller, and
failures logged without the URL or the alert."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from types import TracebackType
from typing import Any

import pytest

from ehr.audit.webhook import Target, Webhook
from ehr.pki import DevPki

ALERT = {"id": "a-1", "rule": "repeated-refusals", "subject": "10.1.2.3", "detail": {"count": 6}}


class Receiver:
    """An HTTP server on a real socket that records each request and answers with scripted statuses
    (the last one repeats); ``stall`` never answers."""

    def __init__(self, *statuses: int, stall: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._statuses = list(statuses or (200,))
        self._stall = stall
        self._tls = tls
        self._handlers: set[asyncio.Task[Any]] = set()
        self.port = 0

    def url(self, path: str = "/hook?token=s3cret-token") -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((line.strip(), headers, body))
            if self._stall:
                await asyncio.sleep(3600)
            status = self._statuses.pop(0) if len(self._statuses) > 1 else self._statuses[0]
            writer.write(f"HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def wait_for(self, n: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while len(self.requests) < n:
            assert time.monotonic() < deadline, f"{len(self.requests)} of {n} requests arrived"
            await asyncio.sleep(0.01)


def fast(url: str, **options: Any) -> Webhook:
    return Webhook(url, **{"timeout": 2.0, "attempts": 3, "backoff": 0.01, **options})


async def test_posts_the_alert_as_json() -> None:
    async with Receiver(204) as receiver:
        webhook = fast(receiver.url())
        assert await webhook.deliver(json.dumps(ALERT).encode())
    line, headers, body = receiver.requests[0]
    assert line == "POST /hook?token=s3cret-token HTTP/1.1"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{receiver.port}"
    assert json.loads(body) == ALERT


async def test_submit_returns_at_once_and_the_background_task_delivers() -> None:
    async with Receiver(200) as receiver:
        webhook = fast(receiver.url())
        webhook.start()
        webhook.submit(ALERT)
        await receiver.wait_for(1)
        await webhook.stop(grace=2)
    assert webhook.delivered == 1
    assert json.loads(receiver.requests[0][2]) == ALERT


async def test_retries_with_backoff_until_delivered() -> None:
    async with Receiver(503, 429, 200) as receiver:
        webhook = fast(receiver.url(), backoff=0.1)
        started = time.monotonic()
        assert await webhook.deliver(b"{}")
        elapsed = time.monotonic() - started
    assert len(receiver.requests) == 3
    assert elapsed >= 0.1 + 0.2  # 0.1 s, then 0.2 s between the attempts


async def test_gives_up_after_the_attempts_and_logs_without_content(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ehr.audit.webhook")
    async with Receiver(500) as receiver:
        webhook = fast(receiver.url())
        assert not await webhook.deliver(json.dumps(ALERT).encode())
    assert len(receiver.requests) == 3 and webhook.failed == 1
    assert "delivery failed after 3 attempt(s) (HTTP 500)" in caplog.text
    for secret in ("s3cret-token", "10.1.2.3", "repeated-refusals", str(receiver.port)):
        assert secret not in caplog.text


async def test_a_client_error_is_not_retried() -> None:
    async with Receiver(400) as receiver:
        assert not await fast(receiver.url()).deliver(b"{}")
    assert len(receiver.requests) == 1


async def test_a_receiver_that_never_answers_times_out() -> None:
    async with Receiver(stall=True) as receiver:
        webhook = fast(receiver.url(), timeout=0.2, attempts=2)
        started = time.monotonic()
        assert not await webhook.deliver(b"{}")
        assert time.monotonic() - started < 2
    assert len(receiver.requests) == 2


async def test_nothing_listening_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    async with Receiver() as receiver:
        url = receiver.url()
    assert not await fast(url).deliver(b"{}")  # the receiver is gone: connection refused
    assert "ConnectionRefusedError" in caplog.text


async def test_submitting_never_blocks_and_the_queue_is_bounded() -> None:
    async with Receiver(stall=True) as receiver:
        webhook = fast(receiver.url(), timeout=0.2, attempts=1, max_pending=2)
        webhook.start()
        started = time.monotonic()
        for _ in range(10):
            webhook.submit(ALERT)
        assert time.monotonic() - started < 0.05
        await webhook.stop(grace=0.1)
    assert webhook.dropped == 8


async def test_https_receiver_with_a_private_ca(pki: DevPki) -> None:
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    async with Receiver(200, tls=tls) as receiver:
        assert await fast(receiver.url(), ca_file=pki.ca_cert).deliver(b"{}")
        untrusted = fast(receiver.url(), attempts=1)  # the system's CAs do not know the dev CA
        assert not await untrusted.deliver(b"{}")
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("url", "allowed"),
    [("https://siem.example.org/hook", True), ("https://10.0.0.5:8443/a?b=c", True),
     ("http://127.0.0.1:9000/hook", True), ("http://[::1]/hook", True), ("http://localhost/hook", True),
     ("http://siem.example.org/hook", False), ("http://10.0.0.5/hook", False), ("ftp://127.0.0.1/x", False),
     ("https:///nohost", False), ("https://user:pw@siem.example.org/", False), ("https://h:99999/", False)],
)
def test_webhook_url_policy(url: str, allowed: bool) -> None:
    if allowed:
        Target.parse(url)
    else:
        with pytest.raises(ValueError):
            Target.parse(url)


def test_request_line_and_host_header() -> None:
    target = Target.parse("https://[::1]:8443/a/b?x=1")
    head = target.request(b"{}").decode()
    assert head.startswith("POST /a/b?x=1 HTTP/1.1\r\nHost: [::1]:8443\r\n")
    assert Target.parse("https://siem.example.org").request(b"").decode().split("\r\n")[:2] == [
        "POST / HTTP/1.1", "Host: siem.example.org"]
