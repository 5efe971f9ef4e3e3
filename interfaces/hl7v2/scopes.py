"""What a sender may do in the store, by the message types it is registered for (least privilege).

Each message also writes its raw text (Binary) and a Provenance. An A40 merge moves every reference
from the retired patient to the surviving one, so it reads and updates whatever is in that patient's
compartment.
"""

from __future__ import annotations

from collections.abc import Iterable

from smart_auth.scopes import Permissions

ALWAYS = "system/Binary.c system/Provenance.c"
BY_TYPE = {
    "ADT^A01": "system/Patient.crus system/Encounter.crus",
    "ADT^A04": "system/Patient.crus system/Encounter.crus",
    "ADT^A08": "system/Patient.crus",
    "ADT^A28": "system/Patient.crus",
    "ADT^A31": "system/Patient.crus",
    "ADT^A40": "system/Patient.crus system/*.rus",
    "ORU^R01": "system/Patient.crs system/DiagnosticReport.crus system/Observation.crus system/Specimen.crus",
}
SUPPORTED = frozenset(BY_TYPE)


def permissions_for(types: Iterable[str]) -> Permissions:
    scopes = {ALWAYS, *(BY_TYPE[t] for t in types if t in BY_TYPE)}
    return Permissions.parse(" ".join(sorted(scopes)))
