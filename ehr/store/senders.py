"""Registered HL7 v2 sending systems (``ehr senders add``): who may send what over MLLP/TLS.

A sender is known by its client certificate (RFC 8705 x5t#S256 thumbprint); every message it sends
must name its facility in MSH-4 (and its application in MSH-3, when one was registered), and be of a
type it was registered for. Administrative data, not ePHI; each change leaves an AuditEvent.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from ehr.audit.events import Interaction
from ehr.audit.log import AuditLog
from ehr.context import AccessContext
from ehr.db.database import Conflict, Database, Row
from ehr.errors import Category, EhrError

_TYPE = re.compile(r"^[A-Z0-9]{3}\^[A-Z0-9]{3}$")
_COLUMNS = ("id", "name", "cert_thumbprint", "application", "facility", "types", "created_us", "disabled")
_PLACES = ", ".join(f"${n + 1}" for n in range(len(_COLUMNS)))
_INSERT = f"INSERT INTO hl7_sender ({', '.join(_COLUMNS)}) VALUES ({_PLACES})"


@dataclass(frozen=True, slots=True)
class Sender:
    id: str
    name: str
    cert_thumbprint: str
    facility: str                   # MSH-4.1 it must send
    application: str | None         # MSH-3.1 it must send, when registered
    types: frozenset[str]           # MSH-9 type^trigger it may send, e.g. ORU^R01
    disabled: bool = False

    @property
    def actor(self) -> str:
        """Its id in version actors and AuditEvent agents."""
        return f"hl7:{self.id}"


class SenderRegistry:
    def __init__(self, db: Database, audit: AuditLog) -> None:
        self._db = db
        self._audit = audit

    async def add(
        self, ctx: AccessContext, name: str, cert_thumbprint: str, facility: str, types: list[str],
        application: str | None = None,
    ) -> Sender:
        async with self._audit.audited(ctx, Interaction("sender-add")) as event:
            sender = _validated(name, cert_thumbprint, facility, types, application)
            event.detail = {
                "sender": sender.id, "name": sender.name, "x5t#S256": sender.cert_thumbprint,
                "facility": sender.facility, "application": sender.application or "", "types": _joined(sender.types),
            }
            try:
                await self._db.execute(
                    _INSERT, sender.id, sender.name, sender.cert_thumbprint, sender.application, sender.facility,
                    _joined(sender.types), time.time_ns() // 1000, False,
                )
            except Conflict:
                raise EhrError(Category.CONFLICT, "a sender with this certificate is already registered") from None
            return sender

    async def by_thumbprint(self, thumbprint: str) -> Sender | None:
        row = await self._db.fetch_one("SELECT * FROM hl7_sender WHERE cert_thumbprint = $1", thumbprint)
        return _sender(row) if row else None

    async def list(self) -> list[Sender]:
        return [_sender(row) for row in await self._db.fetch_all("SELECT * FROM hl7_sender ORDER BY name")]

    async def set_disabled(self, ctx: AccessContext, sender_id: str, disabled: bool) -> None:
        what = Interaction("sender-disable" if disabled else "sender-enable", detail={"sender": sender_id})
        async with self._audit.audited(ctx, what):
            if await self._db.execute("UPDATE hl7_sender SET disabled = $1 WHERE id = $2", disabled, sender_id) == 0:
                raise EhrError(Category.NOT_FOUND, "no such sender")


def _validated(name: str, thumbprint: str, facility: str, types: list[str], application: str | None) -> Sender:
    if not name.strip() or len(name) > 200:
        raise EhrError(Category.INVALID, "a sender needs a name of at most 200 characters")
    if not facility.strip() or len(facility) > 200:
        raise EhrError(Category.INVALID, "a sender needs its facility (MSH-4), at most 200 characters")
    wanted = frozenset(t.strip().upper() for t in types if t.strip())
    if not wanted or not all(_TYPE.match(t) for t in wanted):
        raise EhrError(Category.INVALID, "message types are written TYPE^TRIGGER, e.g. ORU^R01,ADT^A01")
    return Sender(
        id=str(uuid.uuid4()), name=name.strip(), cert_thumbprint=thumbprint, facility=facility.strip(),
        application=(application or "").strip() or None, types=wanted,
    )


def _joined(types: frozenset[str]) -> str:
    return " ".join(sorted(types))


def _sender(row: Row) -> Sender:
    return Sender(
        id=row["id"], name=row["name"], cert_thumbprint=row["cert_thumbprint"], facility=row["facility"],
        application=row["application"], types=frozenset(row["types"].split()), disabled=bool(row["disabled"]),
    )
