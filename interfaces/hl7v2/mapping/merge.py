"""ADT^A40 (merge patient - patient identifier list): PID-3 names the surviving patient, MRG-1 the
retired one (v2.5.1 section 3.6.2). Two entries (patient.html#links): the surviving Patient as a
conditional update carrying ``link.type = replaces`` to the retired one, and a FHIRPath Patch of the
retired Patient (``active`` false, ``link.type = replaced-by`` to the survivor). Moving the other
resources' references from the retired patient is done elsewhere, with ``merge_keys``.
"""

from __future__ import annotations

from datetime import UTC

from interfaces.hl7v2.errors import Code
from interfaces.hl7v2.mapping.context import JSON, Context, criteria, token
from interfaces.hl7v2.mapping.datatypes import cx
from interfaces.hl7v2.mapping.patient import identity, patient
from interfaces.hl7v2.message import Parsed


def merge_keys(parsed: Parsed) -> tuple[str, str]:
    """The (surviving, retired) patients' ``system|value`` search tokens; Rejected (AE) when missing."""
    ctx = Context.of(parsed, zone=UTC)  # no dates are read
    found = _keys(ctx)
    ctx.check()
    assert found is not None
    return found[1], found[2]


def merge(ctx: Context) -> None:
    pid, found = ctx.first("PID"), _keys(ctx)
    if pid is None or found is None:
        return
    identifiers, surviving, retired = found
    resource = patient(ctx, pid, identifiers)
    resource["link"] = [{"other": {"reference": criteria("Patient", retired)}, "type": "replaces"}]
    ctx.tx.patch("Patient", retired, _retire(ctx.tx.put(resource, surviving)))


def _keys(ctx: Context) -> tuple[list[JSON], str, str] | None:
    """PID-3's identifiers, the surviving and the retired patient's tokens (errors noted)."""
    found = identity(ctx, ctx.first("PID"))
    mrg = ctx.first("MRG")
    old = cx(mrg.rep(1), ctx.sender_system) if mrg is not None else None
    if old is None:
        ctx.problem(Code.REQUIRED_FIELD, "MRG-1 (prior patient identifier list) is empty", ("MRG", 1, 1))
        return None
    retired = token(old["system"], old["value"])
    if found is not None and found[1] == retired:
        ctx.problem(Code.DUPLICATE_KEY, "MRG-1 names the surviving patient of PID-3", ("MRG", 1, 1))
        return None
    return (found[0], found[1], retired) if found is not None else None


def _retire(survivor: str) -> JSON:
    """FHIRPath Patch (fhirpatch.html): active := false (delete first: add fails on a present element),
    and a replaced-by link to the survivor."""
    def operation(kind: str, path: str, *parts: JSON) -> JSON:
        return {"name": "operation", "part": [{"name": "type", "valueCode": kind},
                                              {"name": "path", "valueString": path}, *parts]}
    link = {"name": "value", "part": [{"name": "other", "valueReference": {"reference": survivor}},
                                      {"name": "type", "valueCode": "replaced-by"}]}
    return {"resourceType": "Parameters", "parameter": [
        operation("delete", "Patient.active"),
        operation("add", "Patient", {"name": "name", "valueString": "active"},
                  {"name": "value", "valueBoolean": False}),
        operation("add", "Patient", {"name": "name", "valueString": "link"}, link),
    ]}

