"""The CapabilityStatement, generated from what the server really supports (no search yet)."""

from __future__ import annotations

from ehr import __version__
from ehr.crypto.canonical import canonical_json
from ehr.fhir.validator import RESOURCE_TYPES

_TYPE_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create")


def capability_statement(base: str, published: str) -> bytes:
    resources = [
        {
            "type": name,
            "interaction": [{"code": code} for code in _TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": False,
            "conditionalRead": "full-support",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        for name in sorted(RESOURCE_TYPES)
    ]
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
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "Certificates",
                                }
                            ]
                        }
                    ],
                    "description": "Mutual TLS: a client certificate from the configured CA, registered "
                    "with SMART system/ scopes, is required for every interaction but metadata.",
                },
                "resource": resources,
                "interaction": [{"code": "history-system"}],
            }
        ],
    }
    return canonical_json(statement)
