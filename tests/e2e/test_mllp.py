"""HL7 v2 over MLLP/TLS against a real ``ehr serve``: python-hl7's asyncio MLLP client sends real lab
and ADT messages, the ACKs come back, and what they said landed is read back over FHIR (HTTPS).

The demo sender that ``ehr init`` registers holds the dev client certificate, facility DEMO-LAB.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from contextlib import suppress
from pathlib import Path
from typing import Any

import hl7
import httpx
import pytest
from hl7.mllp import open_hl7_connection

from ehr.pki import issue_certificate
from tests.e2e.server import client_context, ehr, free_port, running_server
from tests.fhir.shared import CONFORMANCE, require

pytestmark = pytest.mark.slow


def message(name: str, facility: str = "DEMO-LAB") -> str:
    """A sample with MSH-4 set to ``facility`` (the samples name their own labs)."""
    text = (require(CONFORMANCE / "hl7v2") / name).read_bytes().decode()
    fields = text.split("\r", 1)[0].split("|")
    fields[3] = facility
    return "|".join(fields) + "\r" + text.split("\r", 1)[1]


async def exchange(port: int, context: ssl.SSLContext, texts: list[str]) -> list[Any]:
    """Send all messages pipelined on one connection, then read the ACKs in order."""
    reader, writer = await open_hl7_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        for text in texts:
            writer.writemessage(hl7.parse(text))
        await writer.drain()
        return [await asyncio.wait_for(reader.readmessage(), 30) for _ in texts]
    finally:
        writer.close()
        with suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def acks(replies: list[Any]) -> list[str]:
    return [str(reply.segment("MSA")[1]) for reply in replies]


def fhir(base: str, home: Path, path: str) -> dict[str, Any]:
    response = httpx.get(f"{base}/{path}", verify=client_context(home), timeout=30)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_lab_results_and_admissions_land_and_duplicates_do_not(home: Path, server_database: str) -> None:
    port = free_port()
    context = client_context(home)
    with running_server(home, server_database, EHR_MLLP_PORT=str(port)) as base:
        oru, adt = message("ORU_R01_python-hl7_1.hl7"), message("ADT_A01_hapi_1.hl7")
        assert acks(asyncio.run(exchange(port, context, [oru, adt, oru]))) == ["AA", "AA", "AA"]
        reports = fhir(base, home, "DiagnosticReport?_total=accurate")
        assert reports["total"] == 1       # the repeated ORU changed nothing
        report = reports["entry"][0]["resource"]
        assert fhir(base, home, report["subject"]["reference"])["identifier"][0]["value"] == "555-44-4444"
        assert fhir(base, home, "Encounter?_total=accurate")["total"] == 1
        assert fhir(base, home, "Provenance?_total=accurate")["total"] == 2
        refused = asyncio.run(exchange(port, context, [message("ORU_R01_python-hl7_1.hl7", "ELSEWHERE")]))
        assert acks(refused) == ["AR"]
    assert ehr(home, "verify", database_url=server_database).returncode == 0
    audit = ehr(home, "audit", "verify", database_url=server_database)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_sender_is_registered_by_certificate_and_limited_to_its_types(home: Path, server_database: str) -> None:
    pki = home / "pki"
    issue_certificate(pki / "ca.pem", pki / "ca-key.pem", "radiology", pki / "ris.pem", pki / "ris-key.pem")
    added = ehr(home, "senders", "add", "--name", "RIS", "--cert", str(pki / "ris.pem"), "--facility", "RAD",
                "--types", "ADT^A08", database_url=server_database)
    assert added.returncode == 0, added.stderr
    listed = ehr(home, "senders", "list", database_url=server_database).stdout
    assert "RIS active facility=RAD" in listed and "demo-lab active" in listed
    port = free_port()
    with running_server(home, server_database, EHR_MLLP_PORT=str(port)):
        replies = asyncio.run(exchange(port, client_context(home, "ris"), [
            message("ADT_A08_fhirconverter_2.hl7", "RAD"), message("ORU_R01_python-hl7_1.hl7", "RAD"),
        ]))
    assert acks(replies) == ["AA", "AR"]


def test_unsupported_types_cannot_be_registered(home: Path, server_database: str) -> None:
    result = ehr(home, "senders", "add", "--name", "x", "--cert", str(home / "pki" / "client.pem"),
                 "--facility", "X", "--types", "SIU^S12", database_url=server_database)
    assert result.returncode == 2 and "not supported: SIU^S12" in result.stderr


def test_without_a_client_certificate_the_handshake_fails(home: Path, server_database: str) -> None:
    port = free_port()
    with running_server(home, server_database, EHR_MLLP_PORT=str(port)):
        probe = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(home / "pki" / "ca.pem"),
             "-ign_eof"],  # send the message, then wait for the server's answer or close
            input=b"\x0b" + message("ORU_R01_python-hl7_1.hl7").encode() + b"\x1c\r", capture_output=True, timeout=30,
        )
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            asyncio.run(exchange(port, client_context(home, None), [message("ORU_R01_python-hl7_1.hl7")]))
    output = (probe.stdout + probe.stderr).decode(errors="replace")
    # TLS 1.3: the server aborts (an alert, or a reset: errno 104) once the client sends no certificate
    refusals = ("alert certificate required", "handshake failure", "unexpected eof while reading", "errno=104")
    assert any(refusal in output for refusal in refusals) and "MSA" not in output, output[-2000:]
