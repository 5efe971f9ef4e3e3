"""HL7 v2 messages as FHIR R4 transaction Bundles (HL7 v2-to-FHIR IG, build.fhir.org/ig/HL7/v2-to-fhir).

``to_transaction`` picks the mapper by MSH-9 from ``MAPPERS``. An unknown message type or trigger is
refused (AR); content errors are collected while mapping and raised together (AE, nothing stored).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import tzinfo

from interfaces.hl7v2.errors import Code, Rejected
from interfaces.hl7v2.mapping import adt, merge, oru
from interfaces.hl7v2.mapping.context import JSON, Context
from interfaces.hl7v2.mapping.merge import merge_keys
from interfaces.hl7v2.message import Parsed

Mapper = Callable[[Context], None]

MAPPERS: dict[str, dict[str, Mapper]] = {
    "ADT": {
        "A01": adt.with_visit, "A04": adt.with_visit,
        "A08": adt.patient_only, "A28": adt.patient_only, "A31": adt.patient_only,
        "A40": merge.merge,
    },
    "ORU": {"R01": oru.results},
}


def mapper_for(message_type: str) -> Mapper:
    """The mapper of ``TYPE^TRIGGER``; Rejected (AR) when there is none."""
    kind, _, trigger = message_type.partition("^")
    triggers = MAPPERS.get(kind)
    if triggers is None:
        raise Rejected(Code.UNSUPPORTED_MESSAGE_TYPE, "the message type (MSH-9.1) is not supported", reject=True,
                       location=("MSH", 1, 9, 1, 1))
    if trigger not in triggers:
        raise Rejected(Code.UNSUPPORTED_EVENT, "the trigger event (MSH-9.2) is not supported for this message type",
                       reject=True, location=("MSH", 1, 9, 1, 2))
    return triggers[trigger]


def to_transaction(parsed: Parsed, *, zone: tzinfo) -> JSON:
    """The message as a transaction Bundle; ``zone`` is the sender's, for times sent without an offset."""
    mapper = mapper_for(parsed.header.message_type)
    ctx = Context.of(parsed, zone)
    mapper(ctx)
    ctx.check()
    return ctx.tx.bundle()


__all__ = ["MAPPERS", "merge_keys", "to_transaction"]
