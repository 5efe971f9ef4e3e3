"""The real server over a real TLS socket: mTLS clients in, everyone else out."""

from __future__ import annotations

import json
import ssl
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from ehr.pki import create_ca, issue_certificate
from tests.e2e.server import client_context, ehr, running_server, serve_process

PATIENT = {"resourceType": "Patient", "name": [{"family": "Tls", "given": ["Over"]}], "gender": "female"}


def test_crud_over_mutual_tls(home: Path, server_database: str) -> None:
    with running_server(home, server_database) as base:
        with httpx.Client(base_url=base + "/", verify=client_context(home)) as fhir:
            created = fhir.post("Patient", json=PATIENT)
            assert created.status_code == 201, created.text
            rid = created.json()["id"]
            assert fhir.get(f"Patient/{rid}").json()["name"] == PATIENT["name"]
            updated = fhir.put(f"Patient/{rid}", json={**PATIENT, "id": rid}, headers={"If-Match": 'W/"1"'})
            assert updated.status_code == 200
            assert fhir.delete(f"Patient/{rid}").status_code == 204
            assert fhir.get(f"Patient/{rid}").status_code == 410
            assert fhir.get(f"Patient/{rid}/_history").json()["total"] == 3
    verified = ehr(home, "verify", database_url=server_database)
    assert verified.returncode == 0, verified.stdout
    assert "OK: 3 versions of 1 resources" in verified.stdout


def test_no_certificate_gets_metadata_but_no_data(home: Path, server_database: str) -> None:
    with running_server(home, server_database) as base:
        with httpx.Client(base_url=base + "/", verify=client_context(home, None)) as anonymous:
            assert anonymous.get("metadata").status_code == 200
            refused = anonymous.get("Patient/any")
            assert refused.status_code == 401
            assert refused.json()["resourceType"] == "OperationOutcome"


def test_certificate_of_another_ca_is_refused(home: Path, server_database: str, tmp_path: Path) -> None:
    create_ca(tmp_path / "evil-ca.pem", tmp_path / "evil-ca-key.pem", "Evil CA")
    issue_certificate(
        tmp_path / "evil-ca.pem", tmp_path / "evil-ca-key.pem", "demo-client",
        tmp_path / "evil.pem", tmp_path / "evil-key.pem",
    )
    context = client_context(home, None)
    context.load_cert_chain(tmp_path / "evil.pem", tmp_path / "evil-key.pem")
    with running_server(home, server_database) as base:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(f"{base}/Patient/any", verify=context)


def test_expired_certificate_is_refused(home: Path, server_database: str, tmp_path: Path) -> None:
    pki = home / "pki"
    past = datetime.now(UTC) - timedelta(days=30)
    issue_certificate(
        pki / "ca.pem", pki / "ca-key.pem", "expired-client", tmp_path / "old.pem", tmp_path / "old-key.pem",
        not_before=past - timedelta(days=30), not_after=past,
    )
    registered = ehr(home, "clients", "add", "--name", "old", "--cert", str(tmp_path / "old.pem"),
                     "--scopes", "system/*.cruds", database_url=server_database)
    assert registered.returncode == 0, registered.stderr
    context = client_context(home, None)
    context.load_cert_chain(tmp_path / "old.pem", tmp_path / "old-key.pem")
    with running_server(home, server_database) as base:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(f"{base}/Patient/any", verify=context)


def test_bs02_tls_1_1_is_refused_on_the_fhir_and_token_endpoints(home: Path, server_database: str) -> None:
    """Checklist BS-02: the token endpoint shares the FHIR endpoint's listener and TLS policy."""
    def legacy(highest: ssl.TLSVersion) -> ssl.SSLContext:
        context = client_context(home)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ssl deprecates TLS 1.0/1.1 settings
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = highest
        context.set_ciphers("ALL:@SECLEVEL=0")
        return context

    with running_server(home, server_database) as base:
        token = base.removesuffix("/fhir") + "/oauth/token"
        for url in (f"{base}/metadata", token):
            with pytest.raises(httpx.ConnectError):
                httpx.post(url, verify=legacy(ssl.TLSVersion.TLSv1_1))
        assert httpx.get(f"{base}/metadata", verify=legacy(ssl.TLSVersion.TLSv1_2)).status_code == 200
        assert httpx.post(token, data={"grant_type": "x"}, verify=legacy(ssl.TLSVersion.TLSv1_2)).status_code == 401


def test_newly_registered_client_with_narrow_scopes(home: Path, server_database: str, tmp_path: Path) -> None:
    pki = home / "pki"
    issue_certificate(pki / "ca.pem", pki / "ca-key.pem", "reader", tmp_path / "r.pem", tmp_path / "r-key.pem")
    added = ehr(home, "clients", "add", "--name", "reader", "--cert", str(tmp_path / "r.pem"),
                "--scopes", "system/Patient.rs", database_url=server_database)
    assert added.returncode == 0, added.stderr
    reader = client_context(home, None)
    reader.load_cert_chain(tmp_path / "r.pem", tmp_path / "r-key.pem")
    with running_server(home, server_database) as base:
        with httpx.Client(base_url=base + "/", verify=client_context(home)) as demo:
            rid = demo.post("Patient", json=PATIENT).json()["id"]
        with httpx.Client(base_url=base + "/", verify=reader) as fhir:
            assert fhir.get(f"Patient/{rid}").status_code == 200
            assert fhir.post("Patient", json=PATIENT).status_code == 403
            assert fhir.delete(f"Patient/{rid}").status_code == 403


def test_shutdown_does_not_wait_for_idle_keep_alive_clients(home: Path, server_database: str) -> None:
    """SIGTERM with a client holding an idle keep-alive connection: the server stops at once and
    records its stop event (a TLS close used to wait 30 s for the idle client's close_notify)."""
    with serve_process(home, server_database) as (process, base):
        with httpx.Client(verify=client_context(home)) as idle:
            assert idle.get(f"{base}/Patient?_count=1").status_code == 200
            started = time.monotonic()
            process.terminate()
            process.wait(timeout=20)
            assert time.monotonic() - started < 10
    stream = ehr(home, "audit", "stream", database_url=server_database)
    assert json.loads(stream.stdout.splitlines()[-1])["subtype"] == "server-stop"
