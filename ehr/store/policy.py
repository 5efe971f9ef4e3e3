"""Deny by default: what may this context do with this type, and confined to what? Pure; no IO.

A grant counts only where the server can confine it:
- ``system/`` grants (Backend Services, certificate clients) count as they are;
- ``user/`` grants count only with a signed-in user, and only as far as the user's role allows
  (smart_auth/roles.py; a role's ``*`` never reaches the audit log);
- ``patient/`` grants count only with a launch patient, confine to that patient's compartment, and
  with a signed-in user stay within the role too (a billing clerk's app reads no observations);
Granular grants (``patient/Observation.rs?category=laboratory``) allow read and search of the
resources their query matches; they never allow a write.

When unconfined (system/user) and patient grants both cover an interaction, the unconfined ones
decide. The answer is an :class:`Access`: the compartment and the queries the store must apply in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from ehr.context import AccessContext
from ehr.errors import Category, EhrError
from ehr.fhir.validator import RESOURCE_TYPES
from smart_auth.roles import EXPLICIT_ONLY
from smart_auth.scopes import Grant, Letter

_WRITES = frozenset("cud")


@dataclass(frozen=True, slots=True)
class Access:
    patient: str | None = None              # confine to this patient's compartment
    filters: tuple[str, ...] | None = None  # granular queries: a resource must match one

    @property
    def unconfined(self) -> bool:
        return self.patient is None and self.filters is None


UNCONFINED = Access()


def access(ctx: AccessContext, resource_type: str, letter: Letter) -> Access:
    """How ``ctx`` may perform ``letter`` on ``resource_type``; FORBIDDEN when no grant covers it."""
    found = _access(ctx, resource_type, letter)
    if found is None:
        raise EhrError(Category.FORBIDDEN, f"the granted scopes do not allow '{letter}' on {resource_type}")
    return found


def require(ctx: AccessContext, resource_type: str, letter: Letter) -> None:
    """Allow only unconfined access (the audit log's review, which has no patient compartment of
    its own to confine to)."""
    if not access(ctx, resource_type, letter).unconfined:
        raise EhrError(
            Category.FORBIDDEN,
            f"'{letter}' on {resource_type} under patient/ or granular scopes is not supported for this interaction",
        )


@dataclass(frozen=True, slots=True)
class View:
    """What searches may return and include: the types readable without a query filter (None: all),
    and the compartment everything is confined to (when any readable grant is a patient/ one)."""

    types: frozenset[str] | None
    patient: str | None


def view(ctx: AccessContext, letter: Letter) -> View:
    """The types on which ``letter`` is granted without a query filter, and their compartment."""
    if _all_types(ctx, letter):
        return View(None, None)
    types: set[str] = set()
    patient: str | None = None
    for res_type in RESOURCE_TYPES:
        found = _access(ctx, res_type, letter)
        if found is not None and found.filters is None:
            types.add(res_type)
            patient = patient or found.patient
    return View(frozenset(types), patient)


def _access(ctx: AccessContext, resource_type: str, letter: Letter) -> Access | None:
    grants = [
        g for g in ctx.permissions.grants if g.covers(resource_type, letter) and _counts(ctx, g, resource_type, letter)
    ]
    if not grants:
        return None
    unconfined = [g for g in grants if g.context != "patient"]
    chosen = unconfined or grants
    patient = None if unconfined else ctx.patient
    if any(g.query is None for g in chosen):
        return Access(patient, None) if patient else UNCONFINED
    return Access(patient, tuple(sorted({g.query for g in chosen if g.query})))


def _counts(ctx: AccessContext, grant: Grant, resource_type: str, letter: Letter) -> bool:
    if grant.query is not None and letter in _WRITES:
        return False
    if grant.context == "system":
        return True
    if grant.context == "patient":
        return ctx.patient is not None and (ctx.role is None or _role_allows(ctx, "patient", resource_type, letter))
    return ctx.role is not None and _role_allows(ctx, "user", resource_type, letter)


def _role_allows(ctx: AccessContext, context: str, resource_type: str, letter: Letter) -> bool:
    """Whether the signed-in user's role covers ``letter`` on the type for a grant of ``context``: a
    role's user/ scopes bound both contexts, its patient/ scopes only patient/ grants."""
    assert ctx.role is not None
    return any(
        r.covers(resource_type, letter)
        and r.context in ("user", context)
        and not (r.resource_type == "*" and resource_type in EXPLICIT_ONLY)
        for r in ctx.role.grants
    )


def _all_types(ctx: AccessContext, letter: Letter) -> bool:
    """The common case, answered without looking at each type: an unconfined ``system/*`` grant."""
    return any(
        g.context == "system" and g.resource_type == "*" and g.query is None and letter in g.letters
        for g in ctx.permissions.grants
    )
