"""AuditEvent resources shaped after IHE BALP (Basic Audit Log Patterns) for FHIR R4. Pure: no IO.

BALP profiles used (https://profiles.ihe.net/ITI/BALP/): IHE.BasicAudit.Create/Read/Update/Delete/
Query for RESTful interactions; other events (security, administration) follow the same agent and
source layout with their own type. Nothing of the resource's content goes in, only references; the
query string of a search is carried base64-encoded as BALP asks, and the whole event is encrypted at
rest by the log.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ehr.context import AccessContext
from ehr.errors import Category

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
_REST_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_INTERACTION = "http://hl7.org/fhir/restful-interaction"
_PROFILE_BY_ACTION = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete", "E": "Query"}
# restful interaction -> action (R4 AuditEvent.action)
ACTIONS = {
    "read": "R", "vread": "R", "history-instance": "R", "history-type": "R", "history-system": "R",
    "search-type": "E", "search-system": "E", "create": "C", "update": "U", "patch": "U", "delete": "D",
    "transaction": "E", "batch": "E", "capabilities": "R", "operation": "E",
}
REST_INTERACTIONS = frozenset(ACTIONS)


@dataclass(slots=True)
class Interaction:
    """What happened, filled in as the store learns it; becomes one AuditEvent."""

    subtype: str                       # a restful-interaction code, or a security/admin event code
    resource_type: str | None = None
    resource_id: str | None = None
    version: int | None = None
    patient: str | None = None         # the patient whose record this touched, when known
    query: str | None = None           # search/history parameters as received
    outcome: str = "0"                 # 0 success, 4 minor failure, 8 serious failure, 12 major failure
    outcome_desc: str | None = None    # what went wrong; never ePHI
    extra_entities: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, str] = field(default_factory=dict)  # non-ePHI facts (configuration, key ids)
    committed: bool = False            # set when the event went into the interaction's own transaction
    on_failure: Callable[[Interaction, Category], None] | None = None  # notes what a failure means (HL7 ACK)

    @property
    def action(self) -> str:
        return ACTIONS.get(self.subtype, "E")

    def failed(self, category: Category, message: str) -> None:
        self.outcome = "4" if category.status < 500 else "8"
        self.outcome_desc = f"{category.status} {message}"
        if self.on_failure is not None:
            self.on_failure(self, category)


def build(ctx: AccessContext, what: Interaction, *, event_id: str, recorded: str, source: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "meta": {"profile": [BALP + _PROFILE_BY_ACTION.get(what.action, "Query")]},
        "type": _event_type(what),
        "subtype": [_subtype(what.subtype)],
        "action": what.action,
        "recorded": recorded,
        "outcome": what.outcome,
        "agent": _agents(ctx, source),
        "source": {
            "observer": {"display": source},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4"}],
        },
    }
    if what.outcome_desc:
        event["outcomeDesc"] = what.outcome_desc
    if ctx.purpose:
        event["purposeOfEvent"] = [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": ctx.purpose}]}
        ]
    entities = _entities(what)
    if entities:
        event["entity"] = entities
    return event


# Non-REST events: subtype -> DICOM audit event type (DCM, as R4's audit-event-type value set allows)
_DCM_TYPES = {
    "server-start": ("110100", "Application Activity"),
    "server-stop": ("110100", "Application Activity"),
    "authenticate": ("110114", "User Authentication"),
    "client-add": ("110137", "User Security Attributes Changed"),
    "client-disable": ("110137", "User Security Attributes Changed"),
    "client-enable": ("110137", "User Security Attributes Changed"),
    "user-add": ("110137", "User Security Attributes Changed"),
    "user-disable": ("110137", "User Security Attributes Changed"),
    "user-enable": ("110137", "User Security Attributes Changed"),
    "user-password": ("110137", "User Security Attributes Changed"),
    "login": ("110114", "User Authentication"),
    "logout": ("110114", "User Authentication"),
    "authorize": ("110114", "User Authentication"),
    "token": ("110114", "User Authentication"),
    "introspect": ("110114", "User Authentication"),
    "revoke": ("110137", "User Security Attributes Changed"),
    "launch": ("110100", "Application Activity"),
    "key-rotate": ("110113", "Security Alert"),
    "key-rewrap": ("110113", "Security Alert"),
    "audit-export": ("110106", "Export"),
    "audit-stream": ("110106", "Export"),
    "sender-add": ("110137", "User Security Attributes Changed"),
    "sender-disable": ("110137", "User Security Attributes Changed"),
    "sender-enable": ("110137", "User Security Attributes Changed"),
    "hl7v2-message": ("110107", "Import"),
}


def _event_type(what: Interaction) -> dict[str, str]:
    if what.subtype in REST_INTERACTIONS:
        return dict(_REST_TYPE)
    code, display = _DCM_TYPES.get(what.subtype, ("110113", "Security Alert"))
    return {"system": _DCM, "code": code, "display": display}


def _subtype(code: str) -> dict[str, str]:
    system = _INTERACTION if code in REST_INTERACTIONS else "urn:ehr:audit-subtype"
    return {"system": system, "code": code}


_V3_ROLE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"


def _agents(ctx: AccessContext, source: str) -> list[dict[str, Any]]:
    client: dict[str, Any] = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"identifier": {"system": "urn:ehr:client", "value": ctx.actor}, "display": ctx.actor_display},
        "requestor": True,
    }
    if ctx.address:
        client["network"] = {"address": ctx.address.rsplit(":", 1)[0], "type": "2"}
    if ctx.cert_thumbprint:
        client["altId"] = f"x5t#S256:{ctx.cert_thumbprint}"
    server = {
        "type": {"coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": source},
        "requestor": False,
    }
    if ctx.role is None:
        return [client, server]
    # a person (signed in; BALP: the user is the requestor, the app they act through an agent beside them)
    client["type"] = {"coding": [{"system": _V3_ROLE, "code": "humanuser", "display": "human user"}]}
    client["who"] = {"identifier": {"system": "urn:ehr:user", "value": ctx.actor}, "display": ctx.actor_display}
    if ctx.app is None:
        return [client, server]
    app = {
        "type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
        "who": {"identifier": {"system": "urn:ehr:client", "value": ctx.app}, "display": ctx.app_display or ctx.app},
        "requestor": False,
    }
    return [client, app, server]


def _entities(what: Interaction) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    if what.patient:
        entities.append(
            {
                "what": {"reference": f"Patient/{what.patient}"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
            }
        )
    if what.resource_type and what.resource_id and not (what.resource_type == "Patient" and what.version is None):
        reference = f"{what.resource_type}/{what.resource_id}"
        if what.version is not None:
            reference += f"/_history/{what.version}"
        entities.append(
            {
                "what": {"reference": reference},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"},
            }
        )
    if what.query:
        entities.append(
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
                "query": base64.b64encode(what.query.encode()).decode(),
            }
        )
    if what.detail:
        entities.append(
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "4"},
                "detail": [{"type": name, "valueString": value} for name, value in sorted(what.detail.items())],
            }
        )
    return entities + what.extra_entities
