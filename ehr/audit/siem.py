"""The SIEM feed (docs/adr/0006-audit-log.md, "SIEM"): chained audit events, reduced to what a SIEM
needs, as JSON lines (``ehr audit stream``) or as RFC 5424 syslog over TLS (RFC 5425).

A record carries no resource content, no query string and no patient id; the patient appears only as
a keyed pseudonym (ehr/audit/pseudonym.py). Records follow the chain, so ``pos`` orders them and names
each one uniquely: a receiver de-duplicates on it. Each also carries its chain hash, which makes the
SIEM an anchor outside the database: a log later cut back, or rewritten, no longer shows that hash at
that position.

The forwarder reads the chain after a cursor kept in ``audit_forward``, sends one batch, waits until
the receiver's TCP has acknowledged every byte, and only then moves the cursor: at-least-once
delivery across crashes and restarts. RFC 5425 has no application-level acknowledgement, so a
receiver that dies after its TCP acknowledged a batch loses it; the receiver's own durability covers
that. Requests never wait for the feed: it reads what is already durable in the chain, one batch in
memory at a time (the backlog stays in the database, not in a queue). Of several server processes,
the one holding the cursor's lease forwards; another takes over when a lease lapses.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import re
import secrets
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ehr.audit.log import aad
from ehr.audit.pseudonym import Pseudonyms
from ehr.crypto.canonical import canonical_json, parse_json
from ehr.crypto.envelope import DecryptionError, Sealed, open_sealed
from ehr.crypto.keys import KeyStore
from ehr.db.database import Database, Row
from ehr.errors import Category, EhrError
from ehr.tls import TLS12_CIPHERS

log = logging.getLogger("ehr.audit.siem")

SYSLOG_PORT = 6514                 # RFC 5425 §4.1
FACILITY = 13                      # RFC 5424 §6.2.1: log audit
SD_ID = "ehrAudit@32473"           # RFC 5424 §6.3.2; 32473 is the documentation enterprise number (RFC 5612)
_SEVERITY = {"0": 6, "4": 4, "8": 3, "12": 2}   # AuditEvent.outcome -> informational, warning, error, critical
_BOM = b"\xef\xbb\xbf"             # RFC 5424 §6.4: MSG is UTF-8 and says so
_PAGE = 500
_RECORDS = (
    "SELECT c.pos, c.event_id, c.hash AS chain_hash, e.id AS found, e.entity_type, e.content_hash, e.kek_id, "
    "e.wrapped_key, e.nonce, e.ciphertext FROM audit_chain c LEFT JOIN audit_event e ON e.id = c.event_id "
    "WHERE c.pos > $1 ORDER BY c.pos LIMIT $2"
)


# -- records ---------------------------------------------------------------------------------------


async def read_records(db: Database, keys: KeyStore, pseudonyms: Pseudonyms, after: int, limit: int = _PAGE
                       ) -> list[dict[str, Any]]:
    """SIEM records of the chained events after position ``after``, in chain order."""
    rows = await db.fetch_all(_RECORDS, after, limit)
    return [_record(keys, pseudonyms, row) for row in rows]


def _record(keys: KeyStore, pseudonyms: Pseudonyms, row: Row) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(
        ("recorded", "action", "subtype", "outcome", "outcomeDesc", "agent", "agentDisplay", "certThumbprint",
         "address", "entityType", "patient", "purpose")
    )
    record.update(pos=int(row["pos"]), id=row["event_id"], chainHash=bytes(row["chain_hash"]).hex())
    event = _open(keys, row)
    if event is None:  # the feed doubles as a tamper alarm: verify will say more
        record["integrity"] = "the chained event is missing or does not match its hash"
        return record
    client: dict[str, Any] = next((a for a in event.get("agent", []) if a.get("requestor")), {})
    who = client.get("who", {})
    alt_id = str(client.get("altId", ""))
    patient = next((e["what"]["reference"] for e in event.get("entity", [])
                    if e.get("type", {}).get("code") == "1" and "what" in e), None)
    purposes = [c.get("code") for p in event.get("purposeOfEvent", []) for c in p.get("coding", [])]
    record.update(
        recorded=event.get("recorded"), action=event.get("action"), outcome=event.get("outcome"),
        subtype=(event.get("subtype") or [{}])[0].get("code"), outcomeDesc=event.get("outcomeDesc"),
        agent=who.get("identifier", {}).get("value"), agentDisplay=who.get("display"),
        certThumbprint=alt_id.removeprefix("x5t#S256:") if alt_id.startswith("x5t#S256:") else None,
        address=client.get("network", {}).get("address"), entityType=row["entity_type"],
        patient=pseudonyms.patient(patient.removeprefix("Patient/")) if patient else None,
        purpose=purposes[0] if purposes else None,
    )
    return record


def _open(keys: KeyStore, row: Row) -> dict[str, Any] | None:
    if row["found"] is None:
        return None
    sealed = Sealed(row["kek_id"], bytes(row["wrapped_key"]), bytes(row["nonce"]), bytes(row["ciphertext"]))
    try:
        body = open_sealed(keys, sealed, aad(row["event_id"]))
    except DecryptionError:
        return None
    if hashlib.sha256(body).digest() != bytes(row["content_hash"]):
        return None
    event: dict[str, Any] = parse_json(body)
    return event


async def stream(db: Database, keys: KeyStore, pseudonyms: Pseudonyms, write: Callable[[str], None], *,
                 after: int = 0, follow: bool = False, poll_s: float = 1.0) -> int:
    """``ehr audit stream``: one JSON line per chained event after ``after``; returns the last position
    written. With ``follow``, keeps polling for new events until cancelled."""
    while True:
        records = await read_records(db, keys, pseudonyms, after)
        for record in records:
            write(canonical_json(record).decode() + "\n")
            after = record["pos"]
        if len(records) < _PAGE:
            if not follow:
                return after
            await asyncio.sleep(poll_s)


# -- RFC 5424 messages, RFC 5425 frames ---------------------------------------------------------------


def syslog_message(record: dict[str, Any], hostname: str) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG`` with the record as JSON in MSG."""
    severity = _SEVERITY.get(record.get("outcome") or "", 2)  # unknown outcome or broken event: critical
    structured = f'[{SD_ID} pos="{record["pos"]}" id="{_sd_value(str(record["id"]))}"]'
    header = f"<{FACILITY * 8 + severity}>1 {record.get('recorded') or '-'} {hostname} ehr - audit {structured} "
    return header.encode("ascii") + _BOM + canonical_json(record)


def frame(message: bytes) -> bytes:
    """RFC 5425 §4.3 octet counting: MSG-LEN SP SYSLOG-MSG."""
    return b"%d " % len(message) + message


def _sd_value(text: str) -> str:
    """RFC 5424 §6.3.3: escape '"', '\\' and ']' in PARAM-VALUE."""
    return re.sub(r'(["\\\]])', r"\\\1", text)


def syslog_hostname(name: str | None = None) -> str:
    """RFC 5424 §6.2.4: printable US-ASCII, at most 255 characters; NILVALUE if nothing is left."""
    cleaned = "".join(c for c in (name or socket.gethostname()) if 33 <= ord(c) <= 126)[:255]
    return cleaned or "-"


# -- the TLS transport ----------------------------------------------------------------------------


class Sender(Protocol):
    def send(self, data: bytes) -> None: ...   # blocking; returns once the receiver has the bytes
    def close(self) -> None: ...


def client_context(ca: Path | None, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """RFC 5425 §5.2 and RFC 9325: verify the receiver's certificate and name; TLS 1.2+, AEAD suites."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def tls_sender(url: str, ca: Path | None, cert: Path | None = None, key: Path | None = None) -> TlsSyslogSender:
    parts = urlsplit(url)
    if parts.scheme != "tls" or not parts.hostname:
        raise EhrError(Category.INVALID, "EHR_SYSLOG_URL must look like tls://host:port")
    return TlsSyslogSender(parts.hostname, parts.port or SYSLOG_PORT, client_context(ca, cert, key))


class TlsSyslogSender:
    """One TLS connection, opened on demand and reopened after any failure. Blocking: run it in a thread."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float = 10.0) -> None:
        self._address = (host, port)
        self._context = context
        self._timeout = timeout
        self._sock: ssl.SSLSocket | None = None

    def send(self, data: bytes) -> None:
        sock = self._sock if self._sock is not None and not _peer_closed(self._sock) else self._connect()
        try:
            sock.sendall(data)
            _await_acknowledgement(sock, self._timeout)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> ssl.SSLSocket:
        self.close()
        raw = socket.create_connection(self._address, timeout=self._timeout)
        try:
            self._sock = self._context.wrap_socket(raw, server_hostname=self._address[0])
        except BaseException:
            raw.close()
            raise
        return self._sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with suppress(OSError):
                sock.close()


def _peer_closed(sock: ssl.SSLSocket) -> bool:
    """A receiver sends nothing; an end of stream (or a reset) means it went away."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""  # TLS 1.3 session tickets are read and dropped here
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


def _await_acknowledgement(sock: ssl.SSLSocket, timeout: float) -> None:
    """Wait until the peer's TCP has acknowledged everything sent (Linux SIOCOUTQ reaches 0)."""
    deadline = time.monotonic() + timeout
    while True:
        unacknowledged = _unacknowledged_bytes(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
        if not unacknowledged:
            return  # 0, or None where the platform cannot tell (then: handed to the kernel)
        if time.monotonic() > deadline:
            raise TimeoutError("the syslog receiver did not acknowledge what was sent")
        time.sleep(0.002)


def _unacknowledged_bytes(sock: socket.socket) -> int | None:
    request = getattr(termios, "TIOCOUTQ", None)  # == SIOCOUTQ on Linux sockets
    if request is None:
        return None
    try:
        count: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0"))[0]
    except OSError:
        return None
    return count


# -- the forwarder ----------------------------------------------------------------------------------


class ForwardCursor:
    """Where a forwarder has got to (``audit_forward``), under a lease so that one process sends."""

    def __init__(self, db: Database, clock: Any, name: str, lease_s: float) -> None:
        self._db, self._clock, self._name = db, clock, name
        self._lease_us = int(lease_s * 1_000_000)
        self.holder = f"{syslog_hostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._exists = False

    async def acquire(self) -> int | None:
        """Take or renew the lease; the position to forward after, or None while another holds it."""
        if not self._exists:
            await self._db.execute(
                "INSERT INTO audit_forward (name, pos) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING", self._name
            )
            self._exists = True
        now = self._clock.now_us()
        taken = await self._db.execute(
            "UPDATE audit_forward SET holder = $2, lease_until_us = $3 WHERE name = $1 "
            "AND (holder IS NULL OR holder = $2 OR lease_until_us < $4)",
            self._name, self.holder, now + self._lease_us, now,
        )
        if not taken:
            return None
        row = await self._db.fetch_one("SELECT pos FROM audit_forward WHERE name = $1", self._name)
        return int(row["pos"]) if row else None

    async def advance(self, pos: int) -> None:
        await self._db.execute(
            "UPDATE audit_forward SET pos = $3 WHERE name = $1 AND holder = $2 AND pos < $3",
            self._name, self.holder, pos,
        )

    async def release(self) -> None:
        await self._db.execute(
            "UPDATE audit_forward SET holder = NULL, lease_until_us = NULL WHERE name = $1 AND holder = $2",
            self._name, self.holder,
        )


class Forwarder:
    """Ships chained events, in order, from the cursor to a syslog receiver (see the module docstring)."""

    def __init__(self, db: Database, keys: KeyStore, pseudonyms: Pseudonyms, sender: Sender, clock: Any, *,
                 name: str = "syslog", batch: int = _PAGE, lease_s: float = 30.0,
                 backoff: tuple[float, float] = (0.5, 60.0), hostname: str | None = None) -> None:
        self._db, self._keys, self._pseudonyms, self._sender = db, keys, pseudonyms, sender
        self.cursor = ForwardCursor(db, clock, name, lease_s)
        self._batch = batch
        self._backoff = backoff
        self._hostname = syslog_hostname(hostname)

    async def forward_once(self) -> int:
        """Send the next batch after the cursor; how many events were sent (0: none, or not our turn)."""
        after = await self.cursor.acquire()
        if after is None:
            return 0
        records = await read_records(self._db, self._keys, self._pseudonyms, after, self._batch)
        if not records:
            return 0
        data = b"".join(frame(syslog_message(record, self._hostname)) for record in records)
        await asyncio.to_thread(self._sender.send, data)
        await self.cursor.advance(records[-1]["pos"])
        return len(records)

    async def run(self, idle_s: float = 1.0) -> None:
        """Forward until cancelled, retrying with exponential backoff (and jitter) after failures."""
        delay = self._backoff[0]
        try:
            while True:
                try:
                    sent = await self.forward_once()
                except Exception as exc:  # noqa: BLE001 - keep going; events wait in the chain meanwhile
                    log.warning("audit forwarding failed (%s); retrying in %.1f s", type(exc).__name__, delay)
                    await asyncio.sleep(delay * (0.8 + secrets.randbelow(400) / 1000))
                    delay = min(delay * 2, self._backoff[1])
                    continue
                delay = self._backoff[0]
                if sent < self._batch:
                    await asyncio.sleep(idle_s)
        finally:
            self.close()
            with suppress(Exception):
                await self.cursor.release()

    def close(self) -> None:
        self._sender.close()
