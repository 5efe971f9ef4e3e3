"""The SIEM feed: JSON lines and RFC 5424 syslog over TLS (RFC 5425 framing) to a real receiver on
127.0.0.1, in chain order, at least once, resuming from the cursor, and never carrying ePHI."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ehr.api.services import Services
from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.audit.pseudonym import Pseudonyms, ensure_pseudonym_secret, load_pseudonyms
from ehr.audit.siem import Forwarder, frame, read_records, stream, syslog_message, tls_sender
from ehr.context import AccessContext
from ehr.crypto.canonical import parse_json
from ehr.errors import EhrError
from ehr.pki import DevPki, certificate_thumbprint
from smart_auth.scopes import Permissions
from tests.audit.test_export import seal
from tests.conftest import FixedClock

SECRET = bytes(range(32))
NAME, MRN = "Zyxwvut", "MRN-4242-QX"
PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "name": [{"family": NAME}], "identifier": [{"system": "urn:mrn", "value": MRN}],
}
MESSAGE = re.compile(
    rb'<(\d+)>1 (\S+) (\S+) ehr - audit \[ehrAudit@32473 pos="(\d+)" id="([0-9a-f-]{36})"\] \xef\xbb\xbf(\{.*\})',
    re.DOTALL,
)
FIELDS = {"pos", "id", "chainHash", "recorded", "action", "subtype", "outcome", "outcomeDesc", "agent", "agentDisplay",
          "certThumbprint", "address", "entityType", "patient", "purpose"}

# The cursor table the owner adds to ehr/db/schema.py; created here until then (no-op after).
audit_forward = Table(
    "audit_forward", MetaData(),
    Column("name", String(64), primary_key=True),
    Column("pos", BigInteger, nullable=False),
    Column("holder", String(64), nullable=True),
    Column("lease_until_us", BigInteger, nullable=True),
)


class Receiver:
    """A syslog-over-TLS receiver (RFC 5425): mutual TLS with the dev PKI, octet-counted frames."""

    def __init__(self, pki: DevPki) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
        self.context.load_cert_chain(pki.server_cert, pki.server_key)
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.raw: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self._stopping = False
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, ssl=self.context)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        if self._stopping:  # the handshake finished after stop() began
            writer.close()
        try:
            while True:
                length = await reader.readuntil(b" ")   # MSG-LEN SP (RFC 5425 §4.3)
                assert re.fullmatch(rb"[1-9][0-9]{0,9} ", length), length
                self.raw.append(await reader.readexactly(int(length)))
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        assert self._server is not None
        self._stopping = True
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        async with asyncio.timeout(10):  # 3.11 waits for every connection to close
            await self._server.wait_closed()
        await asyncio.sleep(0.05)  # let the handlers finish closing

    def records(self) -> list[dict[str, Any]]:
        found = []
        for message in self.raw:
            match = MESSAGE.fullmatch(message)
            assert match, message
            record = parse_json(match.group(6))
            assert (int(match.group(4)), match.group(5).decode()) == (record["pos"], record["id"])
            assert match.group(2).decode() == record["recorded"]
            found.append(record)
        return found

    async def wait_for(self, count: int) -> None:
        for _ in range(500):
            if len(self.raw) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"received {len(self.raw)} of {count} messages")


@pytest.fixture
async def cursor_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(audit_forward.create, checkfirst=True)


@pytest.fixture
async def receiver(pki: DevPki) -> AsyncIterator[Receiver]:
    found = Receiver(pki)
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def patient_id(fhir: httpx.AsyncClient, audit: AuditLog, services: Services) -> str:
    """A patient created, read, missed and searched for by name (through the API and the log), all sealed."""
    created = await fhir.post("Patient", json=PATIENT)
    assert created.status_code == 201
    pid: str = created.json()["id"]
    assert (await fhir.get(f"Patient/{pid}")).status_code == 200
    assert (await fhir.get("Patient/missing")).status_code == 404
    assert (await fhir.get(f"Patient/{pid}/_history", params={"_count": "1"})).status_code == 200
    query = f"family={NAME}&identifier={MRN}"
    await audit.record(_context(), Interaction("search-type", "Patient", patient=pid, query=query))
    await seal(audit, services.db)
    return pid


def _context() -> AccessContext:
    return AccessContext(actor="portal", actor_display="Portal", permissions=Permissions(()), purpose="BTG",
                         address="10.1.2.3:5555", cert_thumbprint="abc")


def _forwarder(services: Services, pki: DevPki, port: int, **options: Any) -> Forwarder:
    sender = tls_sender(f"tls://127.0.0.1:{port}", pki.ca_cert, pki.client_cert, pki.client_key)
    return Forwarder(services.db, services.keys, Pseudonyms(SECRET), sender, FixedClock(), hostname="ehr-test",
                     **options)


async def _drain(forwarder: Forwarder) -> None:
    try:
        while await forwarder.forward_once():
            pass
    finally:
        forwarder.close()


def _no_ephi(raw: bytes, patient_id: str) -> None:
    for secret in (NAME, MRN, patient_id, base64.b64encode(f"family={NAME}".encode()).decode()[:12]):
        assert secret.encode() not in raw, secret


# -- the JSON lines stream ------------------------------------------------------------------------


async def _chained(services: Services) -> int:
    row = await services.db.fetch_one("SELECT count(*) AS n FROM audit_chain")
    return int(row["n"]) if row else 0


async def _cursor(services: Services) -> int | None:
    row = await services.db.fetch_one("SELECT pos FROM audit_forward WHERE name = 'syslog'")
    return int(row["pos"]) if row else None


async def _cursor_reaches(services: Services, pos: int) -> None:
    for _ in range(500):
        if await _cursor(services) == pos:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the cursor did not reach {pos}")


def _by_subtype(records: list[dict[str, Any]], subtype: str, outcome: str = "0") -> dict[str, Any]:
    return next(r for r in records if (r["subtype"], r["outcome"]) == (subtype, outcome))


async def test_stream_writes_only_what_a_siem_needs(
    services: Services, patient_id: str, pki: DevPki
) -> None:
    lines: list[str] = []
    last = await stream(services.db, services.keys, Pseudonyms(SECRET), lines.append)
    records = [parse_json(line) for line in lines]
    assert [r["pos"] for r in records] == list(range(1, await _chained(services) + 1)) and last == len(records)
    assert all(set(r) == FIELDS for r in records)
    head = await services.db.fetch_one("SELECT pos, hash FROM audit_chain ORDER BY pos DESC LIMIT 1")
    assert head is not None and records[-1]["chainHash"] == bytes(head["hash"]).hex()
    read = _by_subtype(records, "read")
    assert (read["action"], read["entityType"], read["agentDisplay"]) == ("R", "Patient", "test-client")
    assert read["certThumbprint"] == certificate_thumbprint(pki.client_cert.read_bytes())
    assert read["patient"] == Pseudonyms(SECRET).patient(patient_id) == _by_subtype(records, "create")["patient"]
    assert _by_subtype(records, "read", "4")["outcomeDesc"] == "404 Patient not found"
    search = _by_subtype(records, "search-type")
    assert (search["agent"], search["address"], search["purpose"]) == ("portal", "10.1.2.3", "BTG")
    _no_ephi("".join(lines).encode(), patient_id)


async def test_stream_resumes_after_a_position(services: Services, patient_id: str) -> None:
    lines: list[str] = []
    await stream(services.db, services.keys, Pseudonyms(SECRET), lines.append, after=3)
    assert [parse_json(line)["pos"] for line in lines] == list(range(4, await _chained(services) + 1))


async def test_stream_follows_new_events(services: Services, audit: AuditLog) -> None:
    lines: list[str] = []
    task = asyncio.create_task(stream(services.db, services.keys, Pseudonyms(SECRET), lines.append,
                                      follow=True, poll_s=0.01))
    await audit.record(_context(), Interaction("read", "Observation", "o1"))
    await seal(audit, services.db)
    for _ in range(300):
        if lines:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    assert [parse_json(line)["entityType"] for line in lines] == ["Observation"]


# -- syslog over TLS --------------------------------------------------------------------------------


@pytest.mark.usefixtures("cursor_table")
async def test_forwarder_ships_events_in_order_without_ephi(
    services: Services, pki: DevPki, receiver: Receiver, patient_id: str
) -> None:
    forwarder = _forwarder(services, pki, receiver.port, batch=2)
    await _drain(forwarder)
    count = await _chained(services)
    await receiver.wait_for(count)
    records = receiver.records()
    assert [r["pos"] for r in records] == list(range(1, count + 1))
    assert records == [parse_json(line) for line in await _streamed(services)]
    headers = [MESSAGE.fullmatch(m) for m in receiver.raw]
    severities = {(r["outcome"], int(h.group(1))) for r, h in zip(records, headers, strict=True) if h}
    assert severities == {("0", 13 * 8 + 6), ("4", 13 * 8 + 4)}  # log audit; informational, warning
    assert all(h and h.group(3) == b"ehr-test" for h in headers)
    _no_ephi(b"".join(receiver.raw), patient_id)
    assert receiver.connections == 1


async def _streamed(services: Services) -> list[str]:
    lines: list[str] = []
    await stream(services.db, services.keys, Pseudonyms(SECRET), lines.append)
    return lines


@pytest.mark.usefixtures("cursor_table")
async def test_forwarder_resumes_from_its_cursor_after_a_restart(
    services: Services, pki: DevPki, receiver: Receiver, patient_id: str, audit: AuditLog
) -> None:
    before = await _chained(services)
    first = asyncio.create_task(_forwarder(services, pki, receiver.port).run(idle_s=0.01))
    await receiver.wait_for(before)
    await _cursor_reaches(services, before)  # delivered, acknowledged, cursor moved
    first.cancel()  # the server stops: the forwarder gives up its lease
    with suppress(asyncio.CancelledError):
        await first
    await audit.record(_context(), Interaction("read", "Observation", "after-restart"))
    await seal(audit, services.db)
    second = asyncio.create_task(_forwarder(services, pki, receiver.port).run(idle_s=0.01))  # a new process
    count = await _chained(services)
    try:
        await receiver.wait_for(count)
        await _cursor_reaches(services, count)
    finally:
        second.cancel()
        with suppress(asyncio.CancelledError):
            await second
    assert [r["pos"] for r in receiver.records()] == list(range(1, count + 1))  # each once, in order


@pytest.mark.usefixtures("cursor_table")
async def test_forwarder_reconnects_with_backoff(
    services: Services, pki: DevPki, patient_id: str, audit: AuditLog
) -> None:
    with socket.socket() as probe:  # a port with nobody listening yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    receiver = Receiver(pki)
    task = asyncio.create_task(_forwarder(services, pki, port, backoff=(0.01, 0.05)).run(idle_s=0.01))
    try:
        await asyncio.sleep(0.2)          # several refused connections
        await receiver.start(port)
        await receiver.wait_for(await _chained(services))
        await receiver.stop()             # the receiver restarts: the sender notices and reconnects
        await audit.record(_context(), Interaction("read", "Observation", "o2"))
        await seal(audit, services.db)
        count = await _chained(services)
        await receiver.start(port)
        await receiver.wait_for(count)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        await receiver.stop()
    positions = [r["pos"] for r in receiver.records()]
    assert sorted(set(positions)) == list(range(1, count + 1)) and positions == sorted(positions)
    assert receiver.connections == 2


class _Failing:
    def __init__(self) -> None:
        self.calls = 0

    def send(self, data: bytes) -> None:
        self.calls += 1
        raise ConnectionRefusedError

    def close(self) -> None:
        pass


@pytest.mark.usefixtures("cursor_table")
async def test_a_failed_send_keeps_the_cursor(services: Services, patient_id: str) -> None:
    failing = _Failing()
    forwarder = Forwarder(services.db, services.keys, Pseudonyms(SECRET), failing, FixedClock())
    with pytest.raises(ConnectionRefusedError):
        await forwarder.forward_once()
    assert await _cursor(services) == 0 and failing.calls == 1


@pytest.mark.usefixtures("cursor_table")
async def test_one_process_forwards_at_a_time(services: Services, patient_id: str) -> None:
    sent: list[list[bytes]] = [[], []]
    clock = FixedClock()

    class Collect:
        def __init__(self, into: list[bytes]) -> None:
            self.into = into

        def send(self, data: bytes) -> None:
            self.into.append(data)

        def close(self) -> None:
            pass

    one, two = (Forwarder(services.db, services.keys, Pseudonyms(SECRET), Collect(s), clock, batch=2, lease_s=30)
                for s in sent)
    assert await one.forward_once() == 2
    assert await two.forward_once() == 0          # the lease is one's
    clock.now += 31_000_000                        # one stops renewing; its lease lapses
    assert await two.forward_once() == 2           # two takes over where one left off
    assert await one.forward_once() == 0
    frames = [m for batch in sent[0] + sent[1] for m in re.findall(rb'pos="(\d+)"', batch)]
    assert frames == [b"1", b"2", b"3", b"4"]


# -- messages and pseudonyms ------------------------------------------------------------------------


def test_frames_count_octets_of_utf8() -> None:
    record = {"pos": 7, "id": "0" * 36, "recorded": "2026-01-01T00:00:00.001000Z", "outcome": "8",
              "agentDisplay": "Zoë 🩺"}
    message = syslog_message(record, "host")
    assert message.startswith(b'<107>1 2026-01-01T00:00:00.001000Z host ehr - audit [ehrAudit@32473 pos="7" id="')
    framed = frame(message)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(message) and rest == message


async def test_broken_event_raises_the_alarm(
    services: Services, patient_id: str, engine: AsyncEngine, audit: AuditLog
) -> None:
    drop = {"sqlite": "DROP TRIGGER audit_event_no_delete", "postgresql": "DROP TRIGGER audit_event_append_only ON "
            "audit_event"}[engine.dialect.name]
    async with engine.begin() as conn:
        await conn.execute(text(drop))
        await conn.execute(text("DELETE FROM audit_event WHERE subtype = 'search-type'"))
    records = await read_records(services.db, services.keys, Pseudonyms(SECRET), 0)
    broken = records[-1]
    assert broken["integrity"] and broken["outcome"] is None
    assert syslog_message(broken, "h").startswith(b"<106>1 - h ")  # critical, no timestamp


def test_pseudonym_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir(mode=0o700)
    with pytest.raises(EhrError, match="run `ehr init`"):
        load_pseudonyms(keys_dir)
    path = ensure_pseudonym_secret(keys_dir)
    first = load_pseudonyms(keys_dir).patient("p1")
    ensure_pseudonym_secret(keys_dir)
    assert load_pseudonyms(keys_dir).patient("p1") == first != load_pseudonyms(keys_dir).patient("p2")
    assert path.stat().st_mode & 0o777 == 0o600 and len(first) == 32 and "p1" not in first
    path.chmod(0o644)
    with pytest.raises(EhrError, match="chmod 600"):
        load_pseudonyms(keys_dir)


def test_pseudonyms_depend_on_the_secret() -> None:
    assert Pseudonyms(SECRET).patient("p1") != Pseudonyms(bytes(32)).patient("p1")
    assert "SECRET" not in repr(Pseudonyms(SECRET)) and repr(Pseudonyms(SECRET)) == "Pseudonyms(...)"
