"""ORU^R01 (unsolicited observation result): per OBR a DiagnosticReport, per OBX an Observation, per
SPM (else OBR-15) a Specimen, all about the PID's patient.

The patient is a conditional create on the first PID-3 identifier: a result must not overwrite the
demographics that ADT owns. Corrections are re-sent as new messages, so when OBR-3 (filler order
number) is valued the report is a conditional update on it, and each Observation one on the
identifier ``<filler>-<OBX-3.1>-<OBX-4, else OBX-1, else its position under the OBR>`` in the filler's
system; without OBR-3 they are creates. NTEs after an OBX are its notes; NTEs after the OBR (which the
IG leaves unmapped, and R4 DiagnosticReport has no note) are added to the notes of each of its
Observations. OBXs outside an OBR (patient observations, ORC-level OBX) are not mapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interfaces.hl7v2.errors import Code, Location
from interfaces.hl7v2.mapping import tables
from interfaces.hl7v2.mapping.context import JSON, Conflict, Context, token
from interfaces.hl7v2.mapping.datatypes import codeable, date_time, ei
from interfaces.hl7v2.mapping.observation import VALUE_BUILDERS, BadValue, interpretation, reference_range, values
from interfaces.hl7v2.mapping.patient import identity, patient
from interfaces.hl7v2.mapping.segments import Segment

_LABORATORY = {"coding": [{"system": tables.OBSERVATION_CATEGORY, "code": "laboratory", "display": "Laboratory"}]}


@dataclass(slots=True)
class Result:
    obx: Segment
    specimen: int | None                        # the SPM it follows, as an index into Order.specimens
    notes: list[Segment] = field(default_factory=list)


@dataclass(slots=True)
class Order:
    obr: Segment
    notes: list[Segment] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    specimens: list[Segment] = field(default_factory=list)


def orders(segments: list[Segment]) -> list[Order]:
    """The ORDER_OBSERVATION groups, read in order: an OBR starts one, an ORC ends it."""
    found: list[Order] = []
    order: Order | None = None
    result: Result | None = None
    for seg in segments:
        if seg.name in ("OBR", "ORC"):
            order, result = (Order(seg) if seg.name == "OBR" else None), None
            found.extend([order] if order else [])
        elif order is not None and seg.name == "OBX":
            result = Result(seg, len(order.specimens) - 1 if order.specimens else None)
            order.results.append(result)
        elif order is not None and seg.name == "NTE":
            (result.notes if result else order.notes).append(seg)
        elif order is not None and seg.name == "SPM":
            order.specimens.append(seg)
            result = None
    return found


def results(ctx: Context) -> None:
    pid = ctx.first("PID")
    found = identity(ctx, pid)
    if pid is None or found is None:
        return
    if any(s.name == "PID" and s.seq > 1 for s in ctx.segments):
        ctx.problem(Code.SEGMENT_SEQUENCE, "more than one patient in one ORU^R01 is not supported", ("PID", 2, 3))
    identifiers, key = found
    found_orders = orders(ctx.segments)
    if not found_orders:  # ORDER_OBSERVATION is required (v2.5.1 section 7.3.1): no results, no patient either
        ctx.problem(Code.SEGMENT_SEQUENCE, "an ORU^R01 needs at least one OBR", ("OBR", 1, 0))
        return
    subject = ctx.tx.create(patient(ctx, pid, identifiers), key)
    for order in found_orders:
        _report(ctx, order, subject)


def _report(ctx: Context, order: Order, subject: str) -> None:
    obr = order.obr
    filler = ei(obr.rep(3), ctx.sender_system, "FILL") if obr.get(3) else None
    start, end = _when(ctx, obr, 7), _when(ctx, obr, 8)
    specimens = [_specimen(ctx, spm, subject) for spm in order.specimens] or _obr_specimen(ctx, obr, subject, start)
    observations = [_observation(ctx, order, r, n, (subject, filler, start, specimens))
                    for n, r in enumerate(order.results, 1)]
    report: JSON = {"resourceType": "DiagnosticReport", "status": _report_status(ctx, obr)}
    report["identifier"] = [i for i in (filler, ei(obr.rep(2), ctx.sender_system, "PLAC")) if i]
    if obr.get(24):
        report["category"] = [{"coding": [{"system": tables.V2 + "0074", "code": obr.get(24)}]}]
    report["code"] = _required_code(ctx, obr, 4)
    report["subject"] = {"reference": subject}
    report.update({"effectivePeriod": {"start": start, "end": end}} if start and end else
                  {"effectiveDateTime": start} if start else {})
    issued = _when(ctx, obr, 22)
    report.update({"issued": issued} if issued and "T" in issued else {})
    report.update({"specimen": [{"reference": s} for s in specimens]} if specimens else {})
    report.update({"result": [{"reference": o} for o in observations]} if observations else {})
    _write(ctx, _drop_empty(report), filler, ("OBR", obr.seq, 3))


def _observation(ctx: Context, order: Order, result: Result, position: int,
                 shared: tuple[str, JSON | None, str | None, list[str]]) -> str:
    subject, filler, effective, specimens = shared
    obx = result.obx
    code = _required_code(ctx, obx, 3)
    resource: JSON = {"resourceType": "Observation", "status": _status(ctx, obx), "category": [_LABORATORY],
                      "code": code, "subject": {"reference": subject}}
    effective = _when(ctx, obx, 14) or effective
    resource.update({"effectiveDateTime": effective} if effective else {})
    resource.update(_value(ctx, obx, code))
    for name, items in (("interpretation", interpretation(obx)), ("referenceRange", reference_range(obx)),
                        ("note", _notes(order.notes + result.notes))):
        resource.update({name: items} if items else {})
    index = result.specimen if result.specimen is not None else 0
    resource.update({"specimen": {"reference": specimens[index]}} if specimens else {})
    key: JSON | None = None
    if filler is not None and obx.get(3):
        local = f"{filler['value']}-{obx.get(3)}-{obx.get(4) or obx.get(1) or position}"
        resource["identifier"] = [{"system": filler["system"], "value": local}]
        key = resource["identifier"][0]
    return _write(ctx, resource, key, ("OBX", obx.seq, 4))


def _value(ctx: Context, obx: Segment, code: JSON) -> JSON:
    kind = obx.get(2)
    if not obx.reps(5):
        return {}
    if kind not in VALUE_BUILDERS:
        what = "is empty" if not kind else "names a value type that is not supported"
        ctx.problem(Code.REQUIRED_FIELD if not kind else Code.DATA_TYPE, f"OBX-2 of OBX {obx.seq} {what}",
                    ("OBX", obx.seq, 2))
        return {}
    try:
        found = values(obx, ctx)
    except BadValue:
        ctx.problem(Code.DATA_TYPE, f"OBX-5 of OBX {obx.seq} is not a valid {kind} value", ("OBX", obx.seq, 5))
        return {}
    if len(found) == 1:
        return dict(found)
    return {"component": [{"code": code, k: v} for k, v in found]}


def _specimen(ctx: Context, spm: Segment, subject: str) -> str:
    """SPM (v2.5+): identifiers (SPM-2 filler, placer), type (SPM-4), collection (SPM-17), received (SPM-18)."""
    ids = spm.rep(2)
    found = [i for i in (ei(ids.part(2), ctx.sender_system, "FILL"), ei(ids.part(1), ctx.sender_system, "PLAC")) if i]
    resource: JSON = {"resourceType": "Specimen", "identifier": found, "type": codeable(spm.rep(4)),
                      "subject": {"reference": subject}}
    start, end = _when(ctx, spm, 17), _when(ctx, spm, 17, 2)
    resource["collection"] = {"collectedPeriod": {"start": start, "end": end}} if start and end else \
        {"collectedDateTime": start} if start else {}
    resource["receivedTime"] = _when(ctx, spm, 18)
    return _write(ctx, _drop_empty(resource), found[0] if found else None, ("SPM", spm.seq, 2))


def _obr_specimen(ctx: Context, obr: Segment, subject: str, collected: str | None) -> list[str]:
    """Before SPM (v2.5), OBR-15 (specimen source) and OBR-7 (collection time) describe the specimen."""
    if not obr.get(15):
        return []
    resource: JSON = {"resourceType": "Specimen", "type": codeable(obr.rep(15).part(1)),
                      "subject": {"reference": subject}}
    resource["collection"] = {"collectedDateTime": collected} if collected else {}
    return [ctx.tx.create(_drop_empty(resource))]


def _write(ctx: Context, resource: JSON, key: JSON | None, where: Location) -> str:
    if key is None:
        return ctx.tx.create(resource)
    try:
        return ctx.tx.put(resource, token(key["system"], key["value"]))
    except Conflict:
        ctx.problem(Code.DUPLICATE_KEY, f"{where[0]} {where[1]} repeats an identifier of this message with "
                    "different content", where)
        return ""


def _when(ctx: Context, seg: Segment, n: int, comp: int = 1) -> str | None:
    text = seg.get(n, comp)
    if not text:
        return None
    try:
        return date_time(text, ctx.zone)
    except ValueError:
        where = (seg.name, seg.seq, n)
        ctx.problem(Code.DATA_TYPE, f"{seg.name}-{n} of {seg.name} {seg.seq} is not a date/time", where)
        return None


def _required_code(ctx: Context, seg: Segment, n: int) -> JSON:
    concept = codeable(seg.rep(n))
    if not concept:
        ctx.problem(Code.REQUIRED_FIELD, f"{seg.name}-{n} of {seg.name} {seg.seq} is empty", (seg.name, seg.seq, n))
    return concept


def _status(ctx: Context, obx: Segment) -> str:
    code = obx.get(11)
    if code not in tables.OBSERVATION_STATUS:
        kind, what = (Code.TABLE_VALUE, "not in table 0085") if code else (Code.REQUIRED_FIELD, "empty")
        ctx.problem(kind, f"OBX-11 of OBX {obx.seq} is {what}", ("OBX", obx.seq, 11))
        return "unknown"
    return tables.OBSERVATION_STATUS[code]


def _report_status(ctx: Context, obr: Segment) -> str:
    """OBR-25 via table 0123; empty gives "unknown" (ORU samples in the wild often leave it out)."""
    code = obr.get(25)
    if code and code not in tables.REPORT_STATUS:
        ctx.problem(Code.TABLE_VALUE, f"OBR-25 of OBR {obr.seq} is not a mapped table 0123 code", ("OBR", obr.seq, 25))
    return tables.REPORT_STATUS.get(code, "unknown")


def _notes(ntes: list[Segment]) -> list[JSON]:
    texts = ("\n".join(r.text() for r in nte.reps(3)) for nte in ntes)
    return [{"text": t} for t in texts if t]


def _drop_empty(resource: JSON) -> JSON:
    return {k: v for k, v in resource.items() if v not in (None, {}, [], "")}
