"""ADT A01 (admit), A04 (register), A08 (update), A28 (add person), A31 (update person).

Every one updates the Patient: a conditional update on the first PID-3 identifier
(``PUT Patient?identifier=system|value``), so a known patient is replaced by the sender's current
view and an unknown one is created. A01 and A04 also record the visit (PV1) as an Encounter: a
conditional update on the visit number (PV1-19) when there is one, else a create. Other ADT segments
(NK1, OBX, AL1, DG1, IN1, ...) and Z-segments are not mapped.
"""

from __future__ import annotations

from interfaces.hl7v2.mapping import tables
from interfaces.hl7v2.mapping.context import JSON, Context, token
from interfaces.hl7v2.mapping.datatypes import cx, date_time
from interfaces.hl7v2.mapping.patient import identity, patient
from interfaces.hl7v2.mapping.segments import Segment


def update_patient(ctx: Context) -> str | None:
    """The Patient entry (conditional update); its fullUrl, or None when PID-3 is unusable."""
    pid = ctx.first("PID")
    found = identity(ctx, pid)
    if pid is None or found is None:
        return None
    identifiers, key = found
    return ctx.tx.put(patient(ctx, pid, identifiers), key)


def patient_only(ctx: Context) -> None:
    """A08, A28, A31."""
    update_patient(ctx)


def with_visit(ctx: Context) -> None:
    """A01, A04: the Patient and, when there is a PV1, the Encounter."""
    subject = update_patient(ctx)
    pv1 = ctx.first("PV1")
    if subject is None or pv1 is None:
        return
    resource = encounter(ctx, pv1, subject)
    visit = resource.get("identifier", [None])[0]
    if visit is None:
        ctx.tx.create(resource)
    else:
        ctx.tx.put(resource, token(visit["system"], visit["value"]))


def encounter(ctx: Context, pv1: Segment, subject: str) -> JSON:
    """PV1 as an Encounter (IG: Segment PV1 to Encounter): status from the trigger (table 0003 map),
    class from PV1-2 (table 0004), identifier from PV1-19, period from PV1-44 and PV1-45."""
    system, code, display = tables.PATIENT_CLASS.get(pv1.get(2), tables.UNKNOWN_CLASS)
    if pv1.get(2) and pv1.get(2) not in tables.PATIENT_CLASS:
        system, code, display = tables.V2 + "0004", pv1.get(2), ""
    resource: JSON = {
        "resourceType": "Encounter",
        "status": tables.ENCOUNTER_STATUS.get(ctx.header.trigger, "unknown"),
        "class": {"system": system, "code": code, **({"display": display} if display else {})},
        "subject": {"reference": subject},
    }
    visit = cx(pv1.rep(19), ctx.sender_system) if pv1.get(19) else None
    if visit is not None:
        visit.setdefault("type", {"coding": [{"system": tables.V2 + "0203", "code": "VN"}]})
        resource["identifier"] = [visit]
    period = _period(ctx, pv1.get(44), pv1.get(45))
    if period:
        resource["period"] = period
    return resource


def _period(ctx: Context, start: str, end: str) -> JSON:
    """Visit times are best-effort: one that is not a DTM is left out."""
    period: JSON = {}
    for key, text in (("start", start), ("end", end)):
        try:
            if text:
                period[key] = date_time(text, ctx.zone)
        except ValueError:
            continue
    return period
