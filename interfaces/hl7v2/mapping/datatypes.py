"""v2 data types as FHIR R4 data types: DTM/TS, CWE/CE, CX/EI/HD, XPN, XAD, XTN and NM with units.

Dates: a v2 DTM (``YYYY[MM[DD[HH[MM[SS[.S+]]]]]][+/-ZZZZ]``) becomes a FHIR dateTime. FHIR wants
seconds and an offset whenever a time is given (datatypes.html#dateTime), so a time without seconds
gets ``:00`` and a time without an offset gets the sender's zone's offset at that moment.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from interfaces.hl7v2.mapping import tables
from interfaces.hl7v2.mapping.segments import Rep

JSON = dict[str, Any]
_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


def date_time(text: str, zone: tzinfo) -> str:
    """A DTM as a FHIR dateTime; ValueError when it is not a DTM."""
    match = _DTM.fullmatch(text.strip())
    if not match or (match[2] is None and match[3]) or (match[4] and not match[3]) or (match[7] and not match[6]):
        raise ValueError("not a DTM")
    year, month, day, hour, minute, second = (int(g) if g else None for g in match.groups()[:6])
    moment = datetime(year or 0, month or 1, day or 1, hour or 0, minute or 0, second or 0)  # checks ranges
    sent = _offset(match[8]) if match[8] else None
    if month is None or day is None:
        return f"{year:04d}" if month is None else f"{year:04d}-{month:02d}"
    if hour is None:
        return moment.date().isoformat()
    offset = sent if sent is not None else zone.utcoffset(moment) or timedelta(0)
    return moment.isoformat() + (match[7] or "") + _format_offset(offset)


def _offset(text: str) -> timedelta:
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 14 or minutes > 59:
        raise ValueError("not a time zone offset")
    delta = timedelta(hours=hours, minutes=minutes)
    return -delta if text[0] == "-" else delta


def _format_offset(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def time_of_day(text: str) -> str:
    """A v2 TM (``HH[MM[SS[.S+]]][+/-ZZZZ]``) as a FHIR time (the offset is dropped: FHIR time has none)."""
    match = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?", text.strip())
    if not match or int(match[1]) > 23 or int(match[2] or 0) > 59 or int(match[3] or 0) > 59:
        raise ValueError("not a TM")
    return f"{match[1]}:{match[2] or '00'}:{match[3] or '00'}{match[4] or ''}"


def decimal(text: str) -> Decimal:
    """A v2 NM as a Decimal (its digits kept); ValueError when it is not a number."""
    if not _NUMBER.fullmatch(text.strip()):
        raise ValueError("not a number")
    return Decimal(text.strip())


def coding_system(name: str) -> str:
    if name in tables.CODING_SYSTEMS:
        return tables.CODING_SYSTEMS[name]
    if re.fullmatch(r"HL7\d{4}", name):
        return tables.V2 + name[3:]
    if _URI.fullmatch(name):
        return name
    return tables.LOCAL_CODE_SYSTEM + quote(name, safe="")


def codeable(rep: Rep) -> JSON:
    """CWE/CE/CNE: the identifier and alternate identifier triplets as codings, CWE-9 (else CWE-2) as text."""
    codings = [c for c in (_coding(rep, 1), _coding(rep, 4)) if c]
    text = rep.get(9) or rep.get(2) or (rep.get(1) if not codings else "")
    concept: JSON = {"coding": codings} if codings else {}
    if text:
        concept["text"] = text
    return concept


def _coding(rep: Rep, first: int) -> JSON:
    code, display, system = rep.get(first), rep.get(first + 1), rep.get(first + 2)
    if not code:
        return {}
    coding: JSON = {"system": coding_system(system)} if system else {}
    coding["code"] = code
    if display:
        coding["display"] = display
    return coding


def authority(namespace: str, universal: str, kind: str) -> str | None:
    """The system of an assigning authority (HD): OID, UUID or URI when HD-2/HD-3 say so, else the namespace."""
    kind = kind.upper()
    if kind == "ISO" and _OID.fullmatch(universal):
        return f"urn:oid:{universal}"
    if kind == "UUID" and _is_uuid(universal):
        return f"urn:uuid:{universal.lower()}"
    if kind in ("URI", "URL") and _URI.fullmatch(universal):
        return universal
    return f"urn:ehr:hl7v2:authority:{quote(namespace, safe='')}" if namespace else None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def identifier(value: str, system: str, type_code: str = "") -> JSON:
    found: JSON = {"system": system, "value": value}
    if type_code in tables.IDENTIFIER_TYPES:
        found["type"] = {"coding": [{"system": tables.V2 + "0203", "code": type_code}]}
    elif type_code:
        found["type"] = {"text": type_code}
    return found


def cx(rep: Rep, default_system: str) -> JSON | None:
    """CX: value, assigning authority (CX-4, an HD in subcomponents), identifier type (CX-5)."""
    value = rep.get(1)
    if not value:
        return None
    namespace, universal, kind = (rep.subs(4) + ["", "", ""])[:3]
    system = authority(namespace, universal, kind) or default_system
    return identifier(value, system, rep.get(5))


def ei(rep: Rep, default_system: str, type_code: str = "") -> JSON | None:
    """EI: entity identifier, namespace (EI-2), universal id (EI-3) and its type (EI-4)."""
    value = rep.get(1)
    if not value:
        return None
    return identifier(value, authority(rep.get(2), rep.get(3), rep.get(4)) or default_system, type_code)


def quantity(value: Decimal, units: Rep) -> JSON:
    """A Quantity with the OBX-6 unit: UCUM units get system and code, others only their text."""
    found: JSON = {"value": value}
    code, text, system = units.get(1), units.get(2), units.get(3)
    if code or text:
        found["unit"] = text or code
    if code and system:
        found["system"], found["code"] = coding_system(system), code
    return found
