"""SMART on FHIR scopes (App Launch 2.x, section "Scopes for requesting clinical data").

v1 (``patient/Observation.read``, ``user/*.write``, ``system/*.*``) and v2 (``system/Patient.cruds``,
``patient/Observation.rs?category=laboratory``) parse into one permission model: a set of
(context, resource type, interaction letters, optional query) grants. ``.read`` means ``rs``,
``.write`` ``cud`` and ``.*`` ``cruds`` (never ``.rd``). Letters must come in the order c r u d s.

This module only parses and narrows; what a grant lets a request do (patient compartment, the
user's role, granular queries) is decided in ehr/store/policy.py, deny by default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Context = Literal["patient", "user", "system"]
Letter = Literal["c", "r", "u", "d", "s"]

_V2_ORDER = "cruds"
_V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}
_V1_OF = {frozenset("rs"): "read", frozenset("cud"): "write", frozenset("cruds"): "*"}
_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})\."
    r"(?P<perms>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>[^\s?#]+))?$"
)
# Scopes that are not about data but that this server understands.
LAUNCH_SCOPES = frozenset({"launch", "launch/patient", "launch/encounter"})
IDENTITY_SCOPES = frozenset({"openid", "fhirUser", "profile"})
REFRESH_SCOPES = frozenset({"offline_access", "online_access"})
KNOWN_SCOPES = LAUNCH_SCOPES | IDENTITY_SCOPES | REFRESH_SCOPES


class InvalidScope(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Grant:
    context: Context
    resource_type: str          # a type name or "*"
    letters: frozenset[str]     # subset of c r u d s
    query: str | None = None    # v2 granular constraint, e.g. "category=laboratory"
    v1: bool = False            # written as .read/.write/.* (answered in the same form)

    def covers(self, resource_type: str, letter: Letter) -> bool:
        return letter in self.letters and self.resource_type in ("*", resource_type)

    def scope(self) -> str:
        if self.v1 and self.letters in _V1_OF:
            text = f"{self.context}/{self.resource_type}.{_V1_OF[self.letters]}"
        else:
            letters = "".join(ch for ch in _V2_ORDER if ch in self.letters)
            text = f"{self.context}/{self.resource_type}.{letters}"
        return f"{text}?{self.query}" if self.query else text

    def within(self, other: Grant) -> bool:
        """Whether everything this grant allows, ``other`` allows too."""
        return (
            self.context == other.context
            and other.resource_type in ("*", self.resource_type)
            and self.letters <= other.letters
            and (other.query is None or other.query == self.query)
        )


def parse_scope(text: str) -> Grant | None:
    """A clinical-data scope as a Grant; None for scopes that are not about data (openid, launch, ...)."""
    if text.split("/", 1)[0] not in ("patient", "user", "system"):
        return None
    match = _SCOPE.match(text)
    if match is None or match["perms"] == "":
        raise InvalidScope(f"{text!r} is not a SMART clinical scope (context/Type.permissions)")
    perms = match["perms"]
    if match["query"] is not None and match["type"] == "*":
        raise InvalidScope(f"{text!r}: a granular ?query needs a resource type, not *")
    letters = _V1_LETTERS.get(perms, perms)
    context: Context = match["context"]  # type: ignore[assignment]
    return Grant(context, match["type"], frozenset(letters), match["query"], v1=perms in _V1_LETTERS)


@dataclass(frozen=True, slots=True)
class Permissions:
    grants: tuple[Grant, ...]
    other_scopes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, scopes: str) -> Permissions:
        grants: list[Grant] = []
        others: list[str] = []
        for text in scopes.split():
            grant = parse_scope(text)
            if grant is None:
                others.append(text)
            elif grant not in grants:
                grants.append(grant)
        return cls(tuple(grants), tuple(dict.fromkeys(others)))

    def has(self, scope: str) -> bool:
        return scope in self.other_scopes

    def narrowed(self, allowed: Permissions) -> Permissions:
        """The grants of this request that ``allowed`` (a client's registration) covers; other
        scopes are kept only when ``allowed`` lists them too."""
        grants = tuple(g for g in self.grants if any(g.within(a) for a in allowed.grants))
        return Permissions(grants, tuple(s for s in self.other_scopes if s in allowed.other_scopes))

    def contexts(self) -> frozenset[str]:
        return frozenset(g.context for g in self.grants)

    def scope_string(self) -> str:
        return " ".join([g.scope() for g in self.grants] + list(self.other_scopes))
