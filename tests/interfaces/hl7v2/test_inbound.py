"""A message through the one door: sender checks, idempotency, ACKs, audit, and what lands in FHIR."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC
from typing import Any

import hl7
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ehr.api.services import Services
from ehr.context import operator_context
from ehr.store.senders import SenderRegistry
from interfaces.hl7v2.inbound import Arrival, Inbound
from tests.audit.helpers import events
from tests.fhir.shared import CONFORMANCE, require

THUMB = "x" * 43
LAB_TYPES = ["ORU^R01", "ADT^A01", "ADT^A08", "ADT^A40"]


def sample(name: str) -> bytes:
    return (require(CONFORMANCE / "hl7v2") / name).read_bytes()


ORU = "ORU_R01_python-hl7_1.hl7"  # MSH-4 ELAB-3, control id CNTRL-3456, 2 OBX


@pytest.fixture
async def inbound(services: Services) -> Inbound:
    senders = SenderRegistry(services.db, services.audit)
    await senders.add(operator_context(), "GHH lab", THUMB, "ELAB-3", LAB_TYPES)
    return Inbound(services.store, services.audit, senders, UTC)


async def send(inbound: Inbound, raw: bytes, thumbprint: str = THUMB) -> list[Any]:
    replies = await inbound.handle(Arrival(raw, thumbprint, "127.0.0.1:5000"))
    return [hl7.parse(reply.decode()) for reply in replies]


def msa(replies: list[Any]) -> list[str]:
    return [str(reply.segment("MSA")[1]) for reply in replies]


async def count(services: Services, res_type: str) -> int:
    row = await services.db.fetch_one("SELECT count(*) AS n FROM resource_version WHERE res_type = $1", res_type)
    return int(row["n"]) if row else 0


async def search(fhir: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    response = await fhir.get(query)
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


async def test_oru_lands_as_fhir_with_provenance_and_raw_message(
    inbound: Inbound, services: Services, fhir: httpx.AsyncClient
) -> None:
    replies = await send(inbound, sample(ORU))
    assert msa(replies) == ["AA"] and str(replies[0].segment("MSA")[2]) == "CNTRL-3456"
    (report,) = await search(fhir, "DiagnosticReport")
    observations = await search(fhir, "Observation")
    assert len(observations) == len(report["result"]) >= 1
    patient = (await fhir.get(report["subject"]["reference"])).json()
    assert patient["resourceType"] == "Patient" and patient["identifier"][0]["value"] == "555-44-4444"
    (provenance,) = await search(fhir, "Provenance")
    targets = {target["reference"] for target in provenance["target"]}
    assert f"DiagnosticReport/{report['id']}" in targets and f"Patient/{patient['id']}" in targets
    binary = (await fhir.get(provenance["entity"][0]["what"]["reference"])).json()
    assert base64.b64decode(binary["data"]).decode().replace("\r", "") == sample(ORU).decode().replace("\r", "")
    assert provenance["agent"][0]["who"]["display"] == "GHH lab"


async def test_the_same_message_again_gets_the_first_ack_and_changes_nothing(
    inbound: Inbound, services: Services
) -> None:
    first = await inbound.handle(Arrival(sample(ORU), THUMB, "127.0.0.1:5000"))
    written = await count(services, "Observation")
    again = await inbound.handle(Arrival(sample(ORU), THUMB, "127.0.0.1:5000"))
    assert again == first
    assert await count(services, "Observation") == written
    newest = (await events(services.db, services.keys))[-1]
    details = {d["type"]: d["valueString"] for e in newest["entity"] for d in e.get("detail", [])}
    assert details["hl7v2-ack"] == "AA" and "hl7v2-duplicate" in details


async def test_every_message_is_audited_with_its_ack_code(inbound: Inbound, services: Services) -> None:
    await send(inbound, sample(ORU))
    await send(inbound, sample(ORU).replace(b"ELAB-3", b"OTHER"))
    messages = [e for e in await events(services.db, services.keys) if e["subtype"][0]["code"] == "hl7v2-message"]
    acks = [{d["type"]: d["valueString"] for x in e["entity"] for d in x.get("detail", [])}["hl7v2-ack"]
            for e in messages]
    assert acks == ["AA", "AR"]
    assert messages[0]["outcome"] == "0" and messages[1]["outcome"] == "4"
    assert messages[0]["agent"][0]["who"]["display"] == "GHH lab"


@pytest.mark.parametrize(
    ("raw", "thumbprint", "why"),
    [
        (lambda: sample(ORU), "y" * 43, "unknown certificate"),
        (lambda: sample(ORU).replace(b"ELAB-3", b"OTHER"), THUMB, "another facility"),
        (lambda: sample("ADT_A04_mirth_1.hl7"), THUMB, "type not registered"),
        (lambda: b"PID|1||x\r", THUMB, "no MSH"),
        (lambda: sample(ORU).replace(b"|2.4", b"|2.2"), THUMB, "unsupported version"),
    ],
)
async def test_refused_with_ar_and_nothing_stored(
    inbound: Inbound, services: Services, raw: Any, thumbprint: str, why: str
) -> None:
    replies = await send(inbound, raw(), thumbprint)
    assert msa(replies) == ["AR"], why
    assert replies[0].segment("ERR")
    assert await count(services, "Binary") == 0


async def test_content_error_is_ae_names_the_field_and_stores_nothing(inbound: Inbound, services: Services) -> None:
    raw = sample(ORU).decode()
    lines = raw.split("\r")
    obx = next(n for n, line in enumerate(lines) if line.startswith("OBX|"))
    fields = lines[obx].split("|")
    fields[2], fields[5] = "NM", "not-a-number"
    lines[obx] = "|".join(fields)
    replies = await send(inbound, "\r".join(lines).encode())
    assert msa(replies) == ["AE"]
    err = replies[0].segment("ERR")
    assert str(err[1]).startswith("OBX^1^5^102&")  # v2.4: ERR-1 (segment^sequence^field^code)
    assert "not-a-number" not in str(replies[0])
    assert await count(services, "Observation") == 0 and await count(services, "Patient") == 0


def _adt(trigger: str, control_id: str, pid3: str, extra: str = "") -> bytes:
    return (f"MSH|^~\\&|ADT|ELAB-3|EHR|HOSP|20260101120000+0000||ADT^{trigger}|{control_id}|P|2.5.1\r"
            f"EVN|{trigger}|20260101120000+0000\r"
            f"PID|1||{pid3}^^^HOSP&1.2.3.4&ISO^MR||Doe^Jane||19700101|F\r"
            f"PV1|1|I|W1^1^1||||||||||||||||V-{control_id}\r{extra}").encode()


def _oru(control_id: str, pid3: str) -> bytes:
    return (f"MSH|^~\\&|LIS|ELAB-3|EHR|HOSP|20260101120000+0000||ORU^R01|{control_id}|P|2.5.1\r"
            f"PID|1||{pid3}^^^HOSP&1.2.3.4&ISO^MR||Doe^Jane||19700101|F\r"
            f"OBR|1||F-{control_id}|718-7^Hemoglobin^LN|||20260101110000+0000\r"
            f"OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL^g/dL^UCUM|12-16|N|||F\r").encode()


async def test_a40_merge_moves_the_record_to_the_surviving_patient(
    inbound: Inbound, fhir: httpx.AsyncClient
) -> None:
    for raw in (_adt("A01", "M1", "OLD"), _oru("M2", "OLD"), _adt("A01", "M3", "NEW")):
        assert msa(await send(inbound, raw)) == ["AA"]
    assert msa(await send(inbound, _adt("A40", "M4", "NEW", "MRG|OLD^^^HOSP&1.2.3.4&ISO^MR\r"))) == ["AA"]
    (old,) = await search(fhir, "Patient?identifier=urn:oid:1.2.3.4|OLD")
    (new,) = await search(fhir, "Patient?identifier=urn:oid:1.2.3.4|NEW")
    assert old["active"] is False
    assert old["link"] == [{"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"}]
    assert new["link"] == [{"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}]
    moved = await search(fhir, f"Observation?subject=Patient/{new['id']}")
    assert len(moved) == 1 and not await search(fhir, f"Observation?subject=Patient/{old['id']}")
    assert len(await search(fhir, f"Encounter?subject=Patient/{new['id']}")) == 2


async def test_a40_naming_an_unknown_patient_is_ae_and_changes_nothing(inbound: Inbound, services: Services) -> None:
    assert msa(await send(inbound, _adt("A01", "N1", "NEW"))) == ["AA"]
    patients = await count(services, "Patient")
    replies = await send(inbound, _adt("A40", "N2", "NEW", "MRG|NOBODY^^^HOSP&1.2.3.4&ISO^MR\r"))
    assert msa(replies) == ["AE"] and "MRG^1^1" in str(replies[0].segment("ERR"))
    assert await count(services, "Patient") == patients


async def test_copies_racing_each_other_are_ingested_once(inbound: Inbound, services: Services) -> None:
    """Senders resend when an ACK is slow: six copies at once write one report and all get its ACK."""
    copies = [inbound.handle(Arrival(sample(ORU), THUMB, f"127.0.0.1:{5000 + n}")) for n in range(6)]
    replies = await asyncio.gather(*copies)
    assert all(reply == replies[0] for reply in replies)
    assert msa([hl7.parse(replies[0][0].decode())]) == ["AA"]
    assert await count(services, "DiagnosticReport") == 1 and await count(services, "Binary") == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.one_of(st.binary(max_size=300), st.binary(max_size=300).map(lambda tail: sample(ORU)[:120] + tail)))
@pytest.mark.parametrize("engine_kind", ["sqlite"])
async def test_garbage_is_answered_and_stores_nothing(inbound: Inbound, services: Services, garbage: bytes) -> None:
    """Random bytes, alone or after a real header: an ACK (or none) and never a stored resource."""
    replies = await inbound.handle(Arrival(garbage, THUMB, "127.0.0.1:5000"))
    assert all(reply.startswith(b"MSH|") for reply in replies)
    assert await count(services, "Binary") == 0
