"""A SMART EHR launch in a real browser: the SMART JavaScript client (npm ``fhirclient``, pinned in
tests/e2e/browser/package.json), served from a small test page on its own origin, completes an EHR
launch in headless Chromium against a running server, then reads the launched patient's data.

tests/e2e/browser/drive.mjs (Playwright's ``playwright-core`` driving Debian's /usr/bin/chromium)
signs in on the real login page, launches the app from the EHR's launcher, approves on the real
consent page and waits for the app to show what it read. The app is served over plain http on
127.0.0.1 (a loopback redirect URI the registration rules admit), so discovery, the token exchange
and the FHIR reads are cross-origin requests that the server's CORS must allow. The server's
certificate comes from the dev CA in home/pki, which is not in the browser's store: the driver's
browser context sets Playwright's ``ignoreHTTPSErrors`` rather than trusting it.

Needs /usr/bin/chromium (Debian's ``chromium``; ``make test`` installs it when run as root) and node
with npm (``npm ci`` runs here, skipped while node_modules matches the lock). Without them the test
skips with a loud message; with CI=true it fails instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.server import EHR, client_context, ehr, environment, running_server

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("engine_kind", ["sqlite"])]

BROWSER_DIR = Path(__file__).parent / "browser"
BUNDLE = BROWSER_DIR / "node_modules" / "fhirclient" / "build" / "fhir-client.js"  # FHIR.* for browsers
CHROMIUM = Path("/usr/bin/chromium")
APP_SCOPES = "launch openid fhirUser patient/*.rs"
USERNAME = "dr.browser"
PASSWORD = "browser-launch-password-1"
PATIENT = {"resourceType": "Patient", "id": "browser-1", "name": [{"family": "Chromewell", "given": ["Ada"]}],
           "birthDate": "1961-04-12"}
OBSERVATION = {"resourceType": "Observation", "id": "browser-obs-1", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Heart rate"},
               "subject": {"reference": "Patient/browser-1"}, "valueQuantity": {"value": 72, "unit": "/min"}}


def test_fhirclient_completes_an_ehr_launch(
    home: Path, server_database: str, tmp_path: Path, node_modules: Path
) -> None:
    load_patient(home, server_database, tmp_path)
    add_user(home, server_database)
    with app_server() as app:
        client_id = register_app(home, server_database, app.origin)
        app.serve("/config.json", "application/json", json.dumps({"clientId": client_id}).encode())
        with running_server(home, server_database) as base:
            shown = drive(base, client_id, tmp_path / "artifacts")
            events = audit_events(home, base)

    assert shown["patientId"] == PATIENT["id"]
    assert shown["patient"]["id"] == PATIENT["id"]
    assert shown["patient"]["name"][0]["family"] == "Chromewell"
    found = [entry["resource"] for entry in shown["observations"].get("entry", [])]
    assert [(o["resourceType"], o["id"]) for o in found] == [("Observation", OBSERVATION["id"])]
    assert "patient/*.rs" in shown["scope"].split()

    # The launch, the approval, the token and the app's reads are each on the record, naming the app.
    by_app = app_events(events, client_id)
    assert {"launch", "authorize", "token", "read", "search-type"} <= by_app.keys(), sorted(by_app)
    for subtype in ("launch", "authorize", "token", "read"):
        assert all(f"Patient/{PATIENT['id']}" in references(e) for e in by_app[subtype]), subtype


# -- the world the browser meets -------------------------------------------------------------------


def load_patient(home: Path, database_url: str, folder: Path) -> None:
    data = folder / "launch.ndjson"
    data.write_text(json.dumps(PATIENT) + "\n" + json.dumps(OBSERVATION) + "\n")
    result = ehr(home, "import", str(data), database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr


def add_user(home: Path, database_url: str) -> None:
    result = subprocess.run(
        [*EHR, "users", "add", "--username", USERNAME, "--name", "Dr Browser", "--role", "clinician",
         "--password-stdin"],
        input=PASSWORD + "\n", env=environment(home, database_url), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def register_app(home: Path, database_url: str, origin: str) -> str:
    result = ehr(home, "clients", "add", "--name", "Browser test app", "--scopes", APP_SCOPES,
                 "--auth-method", "none", "--redirect-uri", f"{origin}/index.html",
                 "--launch-uri", f"{origin}/launch.html", database_url=database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()[0]


def audit_events(home: Path, base: str) -> list[dict[str, Any]]:
    """Every AuditEvent so far, read over FHIR as the demo client (system scopes, the dev client
    certificate)."""
    with httpx.Client(verify=client_context(home), timeout=30) as client:
        response = client.get(f"{base}/AuditEvent", params={"_count": "100"})
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def app_events(events: list[dict[str, Any]], client_id: str) -> dict[str, list[dict[str, Any]]]:
    """The events with the app among their agents, by subtype code."""
    app = {"system": "urn:ehr:client", "value": client_id}
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if any(agent["who"].get("identifier") == app for agent in event["agent"]):
            for coding in event["subtype"]:
                found.setdefault(coding["code"], []).append(event)
    return found


def references(event: dict[str, Any]) -> set[str]:
    return {entity["what"]["reference"] for entity in event.get("entity", []) if "what" in entity}


class _AppServer(ThreadingHTTPServer):
    """The test app's origin: a fixed table of paths to (content type, body), nothing else."""

    files: dict[str, tuple[str, bytes]]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def serve(self, path: str, content_type: str, body: bytes) -> None:
        self.files[path] = (content_type, body)


class _AppPages(BaseHTTPRequestHandler):
    server: _AppServer

    def do_GET(self) -> None:
        found = self.server.files.get(urlsplit(self.path).path)
        if found is None:
            self.send_error(404)
            return
        content_type, body = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: a failure is reported by drive.mjs


@contextmanager
def app_server() -> Iterator[_AppServer]:
    """The app's pages and the fhirclient browser bundle on http://127.0.0.1:<free port>."""
    server = _AppServer(("127.0.0.1", 0), _AppPages)
    html = "text/html; charset=utf-8"
    server.files = {
        "/launch.html": (html, (BROWSER_DIR / "launch.html").read_bytes()),
        "/index.html": (html, (BROWSER_DIR / "index.html").read_bytes()),
        "/fhir-client.js": ("text/javascript", BUNDLE.read_bytes()),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the browser ---------------------------------------------------------------------------------------


def drive(base: str, client_id: str, artifacts: Path) -> dict[str, Any]:
    """Run drive.mjs: sign in, launch, approve; the JSON the app showed."""
    launcher = base.removesuffix("/fhir") + "/oauth/launcher"
    result = subprocess.run(
        ["node", "drive.mjs", "--launcher", launcher, "--username", USERNAME, "--client-id", client_id,
         "--patient", str(PATIENT["id"]), "--artifacts", str(artifacts)],
        cwd=BROWSER_DIR, env={**os.environ, "EHR_TEST_PASSWORD": PASSWORD, "NO_COLOR": "1"},
        capture_output=True, text=True, timeout=180,
    )
    if result.returncode != 0:
        pytest.fail(f"the browser did not complete the EHR launch (exit {result.returncode}):\n{result.stderr}")
    shown: dict[str, Any] = json.loads(result.stdout)
    return shown


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """Chromium and npm present, and node_modules installed from the lock (``npm ci``, once per lock)."""
    missing = [name for name, found in (("/usr/bin/chromium (Debian package chromium)", CHROMIUM.exists()),
                                        ("node", shutil.which("node")), ("npm", shutil.which("npm"))) if not found]
    if missing:
        unavailable(f"the browser launch test needs {', '.join(missing)}; `make test` as root installs chromium")
    installed = BROWSER_DIR / "node_modules"
    stamp = installed / ".package-lock.sha256"
    lock = hashlib.sha256((BROWSER_DIR / "package-lock.json").read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != lock:
        result = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=BROWSER_DIR,
                                capture_output=True, text=True, timeout=280)
        assert result.returncode == 0, f"npm ci failed:\n{result.stdout}\n{result.stderr}"
        stamp.write_text(lock)
    return installed


def unavailable(reason: str) -> None:
    """Fail in CI; elsewhere skip loudly (as tests/conftest.py does for an unreachable PostgreSQL)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: not skipping)")
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # shown in pytest's warnings summary, not turned into an error
        warnings.warn(f"{reason}: the browser launch test is SKIPPED", stacklevel=1)
    pytest.skip(reason)
