"""The CapabilityStatement, generated from what the server really supports."""

from __future__ import annotations

from typing import Any

from ehr import __version__
from ehr.crypto.canonical import canonical_json
from ehr.fhir.validator import RESOURCE_TYPES
from ehr.store.search import supported_params

_TYPE_INTERACTIONS = (
    "read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type",
)
# The audit log is read-only over FHIR (ehr/audit/review.py, ehr/audit/search_params.py).
_AUDIT_PARAMS = (
    ("_id", "token"), ("patient", "reference"), ("agent", "reference"), ("date", "date"), ("action", "token"),
    ("outcome", "token"), ("entity", "reference"), ("subtype", "token"), ("address", "string"),
)
_ACCESS_LOG = {
    "name": "access-log",
    "definition": "urn:ehr:OperationDefinition/Patient-access-log",
    "documentation": "Accounting of disclosures: every AuditEvent about this patient in [start, end).",
}
_EVERYTHING = {
    "name": "everything",
    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
    "documentation": "Every resource in the patient's compartment, the Patient included, paged.",
}


def _search(name: str) -> dict[str, object]:
    """The parameters searched by, and the includes they allow (reference parameters)."""
    found = supported_params(name)
    references = sorted(code for code, p in found.items() if p.type == "reference")
    return {
        "searchInclude": [f"{name}:{code}" for code in references],
        "searchParam": [
            {"name": code, "definition": p.url, "type": p.type, "documentation": p.description}
            if p.description else {"name": code, "definition": p.url, "type": p.type}
            for code, p in sorted(found.items())
        ],
    }


def _audit_event() -> dict[str, object]:
    return {
        "type": "AuditEvent",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": name, "type": kind} for name, kind in _AUDIT_PARAMS],
    }


def _oauth_uris(auth_base: str) -> dict[str, Any]:
    """The SMART oauth-uris extension (checklist DISC-08; the well-known file is the primary route)."""
    url = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    names = ("authorize", "token", "introspect", "revoke")
    return {"url": url, "extension": [{"url": n, "valueUri": f"{auth_base}/oauth/{n}"} for n in names]}


def capability_statement(base: str, published: str, *, auth_base: str | None = None) -> bytes:
    resources = [
        _audit_event() if name == "AuditEvent" else {
            "type": name,
            "interaction": [{"code": code} for code in _TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            **_search(name),
        }
        for name in sorted(RESOURCE_TYPES)
    ]
    for resource in resources:
        if resource["type"] == "Patient":
            resource["operation"] = [_ACCESS_LOG, _EVERYTHING]
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "kind": "instance",
        "software": {"name": "ehr", "version": __version__},
        "implementation": {"description": "FHIR-native reference EHR backend", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "extension": [_oauth_uris(auth_base or base)],
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": code,
                                }
                            ]
                        }
                        for code in ("SMART-on-FHIR", "Certificates")
                    ],
                    "description": "SMART on FHIR: a Bearer access token from this server's authorization "
                    "server (see .well-known/smart-configuration), or mutual TLS with a registered client "
                    "certificate and its system/ scopes, is required for every interaction but metadata.",
                },
                "resource": resources,
                "interaction": [
                    {"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}, {"code": "search-system"},
                ],
                "searchParam": [
                    {"name": code, "definition": p.url, "type": p.type}
                    for code, p in sorted(supported_params("Resource").items())
                ],
            }
        ],
    }
    return canonical_json(statement)
