"""End to end, real processes and sockets: two servers on one database share the refusals of one
address between them; the alert is counted across both, stored once, POSTed once to a webhook on
127.0.0.1, and listed by ``ehr audit alerts``."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_URL, _admin
from tests.e2e.server import EHR, client_context, ehr, environment, free_port, wait_ready

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


@contextmanager
def server(home: Path, database_url: str, **env: str) -> Iterator[str]:
    port = free_port()
    environ = environment(home, database_url, EHR_PORT=str(port), **env)
    process = subprocess.Popen([*EHR, "serve"], env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"https://127.0.0.1:{port}/fhir"
    try:
        wait_ready(base, home, process)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def database(engine_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    if engine_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'state' / 'ehr.sqlite3'}"
        return
    request.getfixturevalue("postgres_url")  # skips (or fails in CI) when PostgreSQL is unreachable
    name = f"ehr_alerts_{uuid.uuid4().hex[:12]}"
    _admin(ADMIN_URL, f'CREATE DATABASE "{name}"')
    yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _admin(ADMIN_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_refusals_across_two_servers_raise_one_alert(tmp_path: Path, database: str) -> None:
    home = tmp_path / "state"
    assert ehr(home, "init", database_url=database).returncode == 0
    anonymous = client_context(home, None)
    with receiver() as (url, received), ExitStack() as stack:
        env = {"EHR_ALERT_REFUSALS": "3", "EHR_ALERT_WEBHOOK_URL": url, "EHR_AUDIT_SEAL_SECONDS": "0.2"}
        bases = [stack.enter_context(server(home, database, **env)) for _ in range(2)]
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
