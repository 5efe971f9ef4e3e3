"""Roles of people who sign in, and the most each may do with patient data.

A ``user/`` or ``patient/`` scope never grants more than the signed-in user's role: the token's
permissions are the intersection of the scopes granted to the app and the role's scopes below
(ehr/store/policy.py). Roles are written as SMART v2 scopes so that one grammar describes both: a
role's ``user/`` scopes bound an app's ``user/`` and ``patient/`` scopes, a role's ``patient/``
scopes only its ``patient/`` ones.
"""

from __future__ import annotations

from types import MappingProxyType

from smart_auth.scopes import Permissions

# Types a role reaches only by naming them: a role's ``*`` does not cover the audit log.
EXPLICIT_ONLY = frozenset({"AuditEvent"})

_CLINICAL_ADMIN = (
    "Patient", "Coverage", "Account", "Claim", "ClaimResponse", "ExplanationOfBenefit", "Invoice",
    "ChargeItem", "Encounter", "Organization", "Practitioner", "PractitionerRole", "Location",
)

ROLES: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    # reads and writes every clinical type; the audit log is for auditors
    "clinician": ("user/*.cruds",),
    # reads everything clinical, documents care, does not delete
    "nurse": ("user/*.crus",),
    # demographics, coverage and claims; no clinical records
    "billing": tuple(f"user/{t}.rs" for t in _CLINICAL_ADMIN)
    + ("user/Coverage.cru", "user/Account.cru", "user/Claim.cru", "user/Invoice.cru", "user/ChargeItem.cru"),
    # reviews who did what: the audit log, and the patients it names
    "auditor": ("user/AuditEvent.rs", "user/Patient.rs"),
    # administers users and clients (command line); no patient data
    "admin": (),
    # a patient (fhir_user Patient/x): reads their own record through patient/ scopes (the launch
    # patient is always their own); never anything through user/ scopes
    "patient": ("patient/*.rs",),
})


def role_permissions(role: str) -> Permissions:
    """What ``role`` may do at most; an unknown role may do nothing."""
    return Permissions.parse(" ".join(ROLES.get(role, ())))
