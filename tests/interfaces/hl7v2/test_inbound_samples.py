"""Every public sample message (and its malformed variants) through the listener's one call: the ACK
each must get, and what it must (or must not) leave in the store. MSH-4 is set to the registered
facility first; everything else is sent as published (LF, CRLF, BOM, cp1252 bytes and all)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import hl7
import pytest

from ehr.api.services import Services
from ehr.context import operator_context
from ehr.store.senders import SenderRegistry
from interfaces.hl7v2.inbound import Arrival, Inbound
from interfaces.hl7v2.scopes import SUPPORTED
from tests.fhir.shared import CONFORMANCE, require

THUMB = "s" * 43
SAMPLES = CONFORMANCE / "hl7v2"
ACCEPTED = ("AA", "CA")  # CA: enhanced mode asked for the accept ACK only (MSH-16 NE)
# malformed/ files that are still a readable, supported message
READABLE = {"ADT_A01_fhirconverter_bom-lf.hl7", "ORU_R01_fhirconverter_lf.hl7"}
WRONG = {"ORU_R01_python-hl7_repetition-subcomponent.hl7"}  # readable, but an ORU^R01 without an OBR: AE
SILENT = {"ADT_A04_python-hl7_two-messages-no-batch.hl7"}  # refused, and MSH-15 NE asked for no ACK at all


def _files() -> list[Path]:
    return sorted(SAMPLES.rglob("*.hl7")) if SAMPLES.exists() else []


def _expected(path: Path) -> str:
    if path.parent.name == "malformed":
        if path.name in READABLE | WRONG:
            return "accepted" if path.name in READABLE else "error"
        return "silent" if path.name in SILENT else "refused"
    kind = "^".join(path.name.split("_")[:2])
    return "accepted" if kind in SUPPORTED and "mirth_2" not in path.name else "refused"  # mirth_2 is v2.2


def _as_registered(raw: bytes) -> bytes:
    """MSH-4 replaced by the registered facility, in the message's own field separator."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 4:
        return raw
    sep = raw[start + 3 : start + 4]
    end = min(i for i in (raw.find(b"\r", start), raw.find(b"\n", start), len(raw)) if i >= 0)
    fields = raw[start:end].split(sep)
    if len(fields) > 3:
        fields[3] = b"SAMPLE"
    return raw[:start] + sep.join(fields) + raw[end:]


@pytest.fixture
async def inbound(services: Services) -> Inbound:
    senders = SenderRegistry(services.db, services.audit)
    await senders.add(operator_context(), "samples", THUMB, "SAMPLE", sorted(SUPPORTED))
    return Inbound(services.store, services.audit, senders, UTC)


async def _written(services: Services) -> int:
    row = await services.db.fetch_one("SELECT count(*) AS n FROM resource_version")
    return int(row["n"]) if row else 0


@pytest.mark.parametrize("engine_kind", ["sqlite"])
@pytest.mark.parametrize("path", _files(), ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_each_sample_gets_its_ack(inbound: Inbound, services: Services, path: Path) -> None:
    raw = _as_registered(path.read_bytes())  # noqa: ASYNC240 - a small local file
    before = await _written(services)
    replies = [hl7.parse(r.decode()) for r in await inbound.handle(Arrival(raw, THUMB, "127.0.0.1:1"))]
    codes = [str(reply.segment("MSA")[1]) for reply in replies]
    expected = _expected(path)
    if expected == "accepted":
        assert codes and all(code in ACCEPTED for code in codes), codes
        assert await _written(services) >= before + 3  # at least a Patient, the Binary and the Provenance
    else:
        wanted = {"silent": [[]], "error": [["AE"]], "refused": [["AR"], ["CR"]]}[expected]
        assert codes in wanted, codes
        assert all(reply.segment("ERR") for reply in replies)
        assert await _written(services) == before


def test_the_samples_are_there() -> None:
    require(SAMPLES)  # without them the cases above are not even collected
    assert len([p for p in _files() if _expected(p) == "accepted"]) >= 25
