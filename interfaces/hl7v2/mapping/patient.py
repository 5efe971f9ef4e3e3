"""PID as a Patient (IG: Segment PID to Patient). The first PID-3 repetition is the patient's key.

Demographics are taken as they come: a birth date that is not a DTM or a sex code outside table 0001
is left out rather than refusing the whole message (the element gets a data-absent-reason), since
the identifiers, not the demographics, decide which patient a message is about.
"""

from __future__ import annotations

from interfaces.hl7v2.errors import Code
from interfaces.hl7v2.mapping import tables
from interfaces.hl7v2.mapping.context import JSON, Context, token
from interfaces.hl7v2.mapping.datatypes import cx, date_time
from interfaces.hl7v2.mapping.segments import Rep, Segment

_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
_BIRTH_TIME = "http://hl7.org/fhir/StructureDefinition/patient-birthTime"


def identity(ctx: Context, pid: Segment | None) -> tuple[list[JSON], str] | None:
    """PID-3's identifiers and the search token of the first; None (and an error noted) when empty."""
    if pid is None:
        ctx.problem(Code.SEGMENT_SEQUENCE, "the message has no PID segment", ("PID", 1, 3))
        return None
    found = [i for i in (cx(r, ctx.sender_system) for r in pid.reps(3)) if i]
    if not found:
        ctx.problem(Code.REQUIRED_FIELD, "PID-3 (patient identifier list) is empty", ("PID", pid.seq, 3))
        return None
    return found, token(found[0]["system"], found[0]["value"])


def patient(ctx: Context, pid: Segment, identifiers: list[JSON]) -> JSON:
    extra = [i for n in (2, 4) for i in (cx(r, ctx.sender_system) for r in pid.reps(n)) if i]
    resource: JSON = {"resourceType": "Patient", "identifier": _distinct(identifiers + extra)}
    resource.update(_optional("name", [n for n in map(human_name, pid.reps(5)) if n]))
    resource.update(_birth(ctx, pid.get(7)))
    if pid.get(8):
        resource.update({"gender": tables.SEX[pid.get(8)]} if pid.get(8) in tables.SEX else _absent("gender"))
    resource.update(_optional("address", [a for a in map(address, pid.reps(11)) if a]))
    phones = [c for n, use in ((13, "home"), (14, "work")) for r in pid.reps(n) for c in telecom(r, use)]
    resource.update(_optional("telecom", phones))
    resource.update(_marital(pid.rep(16)))
    resource.update(_multiple_birth(pid))
    resource.update(_deceased(ctx, pid))
    return resource


def _distinct(identifiers: list[JSON]) -> list[JSON]:
    """PID-3, then PID-2 and PID-4 (deprecated, often repeating PID-3), each system|value once."""
    seen: dict[tuple[str, str], JSON] = {}
    for found in identifiers:
        seen.setdefault((found["system"], found["value"]), found)
    return list(seen.values())


def _optional(key: str, items: list[JSON]) -> JSON:
    return {key: items} if items else {}


def _absent(key: str) -> JSON:
    return {f"_{key}": {"extension": [{"url": _ABSENT, "valueCode": "error"}]}}


def _birth(ctx: Context, text: str) -> JSON:
    if not text:
        return {}
    try:
        moment = date_time(text, ctx.zone)
    except ValueError:
        return _absent("birthDate")
    if "T" not in moment:
        return {"birthDate": moment}
    return {"birthDate": moment[:10], "_birthDate": {"extension": [{"url": _BIRTH_TIME, "valueDateTime": moment}]}}


def _marital(rep: Rep) -> JSON:
    code = rep.get(1)
    if not code:
        return {}
    if code in tables.MARITAL:
        coding = {"system": tables.V3_MARITAL, "code": tables.MARITAL[code]}
        return {"maritalStatus": {"coding": [coding], **({"text": rep.get(2)} if rep.get(2) else {})}}
    return {"maritalStatus": {"text": rep.get(2) or code}}


def _multiple_birth(pid: Segment) -> JSON:
    order = pid.get(25)
    if order.isdigit() and int(order) > 0:
        return {"multipleBirthInteger": int(order)}
    flag = pid.get(24)
    return {"multipleBirthBoolean": flag == "Y"} if flag in ("Y", "N") else {}


def _deceased(ctx: Context, pid: Segment) -> JSON:
    if pid.get(29):
        try:
            return {"deceasedDateTime": date_time(pid.get(29), ctx.zone)}
        except ValueError:
            pass
    flag = pid.get(30)
    return {"deceasedBoolean": flag == "Y"} if flag in ("Y", "N") else {}


def human_name(rep: Rep) -> JSON:
    """XPN: family (FN-1), given (XPN-2, XPN-3), suffix (XPN-4, XPN-6), prefix (XPN-5), use (XPN-7)."""
    name: JSON = {}
    if rep.get(1):
        name["family"] = rep.get(1)
    for key, comps in (("given", (2, 3)), ("prefix", (5,)), ("suffix", (4, 6))):
        values = [rep.get(c) for c in comps if rep.get(c)]
        if values:
            name[key] = values
    if name and rep.get(7) in tables.NAME_USE:
        name["use"] = tables.NAME_USE[rep.get(7)]
    return name


def address(rep: Rep) -> JSON:
    """XAD: street (its SAD subcomponents joined), other designation, city, state, zip, country, type."""
    found: JSON = {}
    lines = [" ".join(s for s in rep.subs(1) if s), rep.get(2)]
    if any(lines):
        found["line"] = [line for line in lines if line]
    for key, comp in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6), ("district", 9)):
        if rep.get(comp):
            found[key] = rep.get(comp)
    kind = rep.get(7)
    if found and kind in tables.ADDRESS_USE:
        found["use"] = tables.ADDRESS_USE[kind]
    if found and kind in tables.ADDRESS_TYPE:
        found["type"] = tables.ADDRESS_TYPE[kind]
    return found


def telecom(rep: Rep, default_use: str) -> list[JSON]:
    """XTN: a phone (XTN-1, else XTN-5..8 or XTN-12) and an email (XTN-4), each with use and system."""
    use = tables.TELECOM_USE.get(rep.get(2), default_use)
    equipment = rep.get(3)
    found = []
    if equipment not in tables.EMAIL_EQUIPMENT and rep.get(2) != "NET":
        number = rep.get(1) or _composed(rep)
        if number:
            kind = tables.TELECOM_SYSTEM.get(equipment, "phone")
            found.append({"system": kind, "value": number, "use": "mobile" if equipment == "CP" else use})
    if rep.get(4):
        found.append({"system": "email", "value": rep.get(4), "use": use})
    return found


def _composed(rep: Rep) -> str:
    parts = [f"+{rep.get(5)}" if rep.get(5) else "", rep.get(6), rep.get(7)]
    number = " ".join(p for p in parts if p) if rep.get(7) else rep.get(12)
    return f"{number} ext. {rep.get(8)}" if number and rep.get(8) else number

