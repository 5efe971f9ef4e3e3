"""End to end, real processes and sockets: two servers on one database share the refusals of one
address between them; the alert is counted across both, stored once, POSTed once to a webhook on
127.0.0.1, and listed by ``ehr audit alerts``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import client_context, ehr, running_server

pytestmark = pytest.mark.slow


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server protocol
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", server.bodies  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_refusals_across_two_servers_raise_one_alert(home: Path, server_database: str) -> None:
    database = server_database
    anonymous = client_context(home, None)
    with receiver() as (url, received), ExitStack() as stack:
        env = {"EHR_ALERT_REFUSALS": "3", "EHR_ALERT_WEBHOOK_URL": url, "EHR_AUDIT_SEAL_SECONDS": "0.2"}
        bases = [stack.enter_context(running_server(home, database, **env)) for _ in range(2)]
        for base in bases * 2:  # 2 + 2 refusals: over the threshold only when both are counted
            assert httpx.get(f"{base}/Patient/p1", verify=anonymous).status_code == 401
        deadline = time.monotonic() + 20
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a second POST would come within a few seal intervals
    assert len(received) == 1, received
    [alert] = received
    assert (alert["rule"], alert["subject"]) == ("repeated-refusals", "127.0.0.1")
    assert alert["detail"]["count"] == 4 and alert["detail"]["subject_type"] == "address"
    listed = ehr(home, "audit", "alerts", "--rule", "repeated-refusals", database_url=database)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 1 and "127.0.0.1" in listed.stdout
    later = ehr(home, "audit", "alerts", "--since", "2999-01-01T00:00:00Z", database_url=database)
    assert later.returncode == 0 and later.stdout == ""
