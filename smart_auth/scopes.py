"""SMART on FHIR scopes (App Launch 2.x, section "Scopes for requesting clinical data").

v1 (``patient/Observation.read``, ``user/*.write``, ``system/*.*``) and v2 (``system/Patient.cruds``,
``patient/Observation.rs?category=laboratory``) parse into one permission model: a set of
(context, resource type, interaction letters, optional query) grants.

Deny by default. What is not granted is refused; and what this server cannot yet confine is refused
too: ``patient/`` grants need a launch patient and the compartment filter of the search issue,
``user/`` grants need a signed-in user, and granular ``?query`` grants need search to evaluate, so
until those exist they allow nothing (:meth:`Permissions.allows` only counts unconditional
``system/`` grants).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Context = Literal["patient", "user", "system"]
Letter = Literal["c", "r", "u", "d", "s"]

_V2_ORDER = "cruds"
_V1_LETTERS = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{1,63})\."
    r"(?P<perms>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>[^\s]+))?$"
)


class InvalidScope(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Grant:
    context: Context
    resource_type: str          # a type name or "*"
    letters: frozenset[str]     # subset of c r u d s
    query: str | None = None    # v2 granular constraint, e.g. "category=laboratory"

    def covers(self, resource_type: str, letter: Letter) -> bool:
        return letter in self.letters and self.resource_type in ("*", resource_type)

    def scope(self) -> str:
        letters = "".join(ch for ch in _V2_ORDER if ch in self.letters)
        text = f"{self.context}/{self.resource_type}.{letters}"
        return f"{text}?{self.query}" if self.query else text


def parse_scope(text: str) -> Grant | None:
    """A clinical-data scope as a Grant; None for scopes that are not about data (openid, launch, ...)."""
    if text.split("/", 1)[0] not in ("patient", "user", "system"):
        return None
    match = _SCOPE.match(text)
    if match is None or match["perms"] == "":
        raise InvalidScope("not a SMART clinical scope (context/Type.permissions)")
    perms = match["perms"]
    letters = _V1_LETTERS.get(perms, perms)
    context: Context = match["context"]  # type: ignore[assignment]
    return Grant(context, match["type"], frozenset(letters), match["query"])


@dataclass(frozen=True, slots=True)
class Permissions:
    grants: tuple[Grant, ...]
    other_scopes: tuple[str, ...] = ()
    _enforceable: tuple[Grant, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        enforceable = tuple(g for g in self.grants if g.context == "system" and g.query is None)
        object.__setattr__(self, "_enforceable", enforceable)

    @classmethod
    def parse(cls, scopes: str) -> Permissions:
        grants: list[Grant] = []
        others: list[str] = []
        for text in scopes.split():
            grant = parse_scope(text)
            if grant is None:
                others.append(text)
            else:
                grants.append(grant)
        return cls(tuple(grants), tuple(others))

    def allows(self, resource_type: str, letter: Letter) -> bool:
        return any(g.covers(resource_type, letter) for g in self._enforceable)

    def types_allowed(self, letter: Letter) -> frozenset[str] | None:
        """The types for which ``letter`` is granted; None means every type ("*")."""
        types: set[str] = set()
        for grant in self._enforceable:
            if letter in grant.letters:
                if grant.resource_type == "*":
                    return None
                types.add(grant.resource_type)
        return frozenset(types)

    def scope_string(self) -> str:
        return " ".join([g.scope() for g in self.grants] + list(self.other_scopes))
